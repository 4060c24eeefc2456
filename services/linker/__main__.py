"""`python -m services.linker`: serve the linker service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["linker"])
