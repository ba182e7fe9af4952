"""Built-in techniques, one module per family; every module here is imported when the technique
registry is first used. Modules import optional libraries inside ``apply`` so that listing the
registry never needs them."""
