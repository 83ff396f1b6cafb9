"""``python -m service``: serve the API with uvicorn on the configured host and port."""

from service.main import main

main()
