"""`python -m services.retrieval`: serve the retrieval service with settings from the environment."""

from concord.serving.runner import serve_main

serve_main(["retrieval"])
