"""`python -m services.encoder`: serve the encoder service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["encoder"])
