"""Example applications; each one runs with ``turbo-gevent examples.NAME.app:app``."""
