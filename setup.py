from setuptools import find_packages, setup

setup(
    name="turbo_gevent",
    version="0.1.0",
    description="Hotwire Turbo Streams for any WSGI application running under gevent",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["turbo_gevent", "turbo_gevent.*"]),
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "gevent-websocket==0.10.1",
        "websockets>=13,<18",
        "werkzeug>=3.0",
        "mako>=1.3",
        "markupsafe>=2.1",
        "itsdangerous>=2.1",
    ],
    extras_require={
        "redis": ["redis>=5.0"],
        "gunicorn": ["gunicorn>=22"],
        "test": [
            "pytest>=8",
            "redis>=5.0",
            "gunicorn>=22",
            "playwright>=1.45",
            "websockets>=13,<18",
        ],
        # the other stacks the benchmark compares against
        "bench": [
            "redis>=5.0",
            "gunicorn>=22",
            "flask>=3.0",
            "flask-sock>=0.7",
            "turbo-flask>=0.8",
        ],
    },
    entry_points={"console_scripts": ["turbo-gevent=turbo_gevent.cli:main"]},
    classifiers=[
        "Framework :: Gevent",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
