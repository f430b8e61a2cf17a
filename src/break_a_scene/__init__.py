"""Break-A-Scene: extract several concepts from one image as text tokens (Avrahami et al., 2023)."""

import logging

__version__ = "0.1.0"

# Where bitsandbytes is installed (the low-memory presets' 8-bit AdamW), importing diffusers imports it, and on
# CPUs with AVX512-BF16 it then warns, on every command, that an optional 4-bit CPU kernel package is missing.
# Nothing here runs 4-bit matmuls on the CPU, so that one logger is kept to errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# and bitsandbytes then looks for that kernel in the (offline) Hugging Face Hub, and says so
logging.getLogger("kernels").setLevel(logging.ERROR)
