"""Third-party code kept verbatim (each folder says where it comes from, its version and its license)."""
