"""`python -m services.bias`: serve the bias service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["bias"])
