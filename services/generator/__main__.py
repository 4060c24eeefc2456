"""`python -m services.generator`: serve the generator service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["generator"])
