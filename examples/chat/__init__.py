"""A chat room: a plain Werkzeug app made live with Turbo Streams."""
