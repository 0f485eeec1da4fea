"""Hotwire Turbo Streams for any WSGI application running under gevent."""
