"""The web: the FastAPI app and its services container, the API routers, the acknowledgement
pages, limits and security headers. Imports anything below it."""
