"""llama.cpp's Hugging Face -> GGUF converter, vendored unmodified (MIT, see ``LICENSE`` and ``gguf-py/LICENSE``).

Source: the ``vendor/llama.cpp`` tree of the ``llama-cpp-python==0.3.36`` sdist on PyPI, which pins llama.cpp at
commit ``0c1e57098bba43ac29e6e3b677cdceebdd22334f``: ``convert_hf_to_gguf.py``, its ``conversion/`` package and its own
``gguf-py/gguf`` package, byte for byte (``README.md`` says how to check). The converter needs this ``gguf-py``: the
``gguf==0.19.0`` wheel on PyPI carries the same version number but predates the converter (it lacks e.g.
``gguf.LazyChunkedTensor``), so converting with it fails. :mod:`adapters.techniques._gguf_convert` imports both under
their upstream names only for the duration of a conversion and restores the installed ``gguf`` afterwards.

This file and ``README.md`` are the only files here that are not upstream's.
"""

#: the llama-cpp-python release whose vendored llama.cpp tree these files come from (the runtime this converts for)
LLAMA_CPP_PYTHON = "0.3.36"
#: the llama.cpp commit that release pins (git submodule ``vendor/llama.cpp``)
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
