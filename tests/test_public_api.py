"""The public names are a contract: ``__all__`` lists exactly what is exported."""

import inspect

import turbo_gevent


def test_all_lists_every_public_name_and_each_exists():
    exported = {
        name for name, value in vars(turbo_gevent).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value) or name == "streams")
    }
    assert set(turbo_gevent.__all__) == exported
    for name in turbo_gevent.__all__:
        assert getattr(turbo_gevent, name) is not None


def test_contract_names_and_signatures():
    from turbo_gevent import streams, templating

    for builder in ("append", "prepend", "replace", "update", "remove", "before", "after", "refresh", "action"):
        assert callable(getattr(streams, builder))
    assert list(inspect.signature(turbo_gevent.TurboStreams).parameters)[:5] == ["app", "hub", "path", "secret", "identify"]
    assert list(inspect.signature(templating.turbo_stream_source).parameters)[:3] == ["path", "streams", "environ"]
    assert {"broadcast", "broadcast_all", "broadcast_to_user", "stats"} <= set(dir(turbo_gevent.Hub))
    assert {"broadcast", "broadcast_all", "broadcast_to_user"} <= set(dir(turbo_gevent.Publisher))
    assert issubclass(turbo_gevent.BrokerError, turbo_gevent.TurboGeventError)
    from turbo_gevent.worker import Worker  # gunicorn -k turbo_gevent.worker.Worker

    assert Worker.wsgi_handler is not None
