"""`python -m services.scorer`: serve the scorer service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["scorer"])
