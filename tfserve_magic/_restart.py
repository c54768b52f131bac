"""What a widget calls to start its server again (glue between the magics and the manager).

Widgets only know their client; the ``%tfserve`` widget commands hand them ``restarter(name)``,
so a widget whose server was stopped (e.g. by a notebook's last cell after Run All) can offer
"Start MLP again" instead of only showing a connection error.
"""

from __future__ import annotations


def restarter(name):
    """A callable that starts server ``name`` again with the options it runs with now, or None
    when ``name`` is not a server the manager knows (a URL, a model of a config file ...)."""
    if not isinstance(name, str):
        return None
    from tfserve_magic import manager

    try:
        handle = manager.find(name)
    except Exception:
        return None
    if handle is None or not (handle.base_path or handle.config):
        return None
    options = dict(
        port=handle.port,
        host=handle.host,
        grpc_port=handle.grpc_port,
        detach=handle.detach,
        backend=handle.backend,
    )

    def start_again():
        running = manager.find(handle.name)
        if running is not None:
            return running
        return manager.start(
            handle.name,
            None if handle.config else handle.base_path,
            config=handle.config,
            **options,
        )

    return start_again
