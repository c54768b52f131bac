"""What a widget calls to start its server again (glue between the magics and the manager).

Widgets only know their client; the ``%tfserve`` widget commands hand them ``restarter(name)``,
so a widget whose server was stopped (e.g. by a notebook's last cell after Run All) can offer
"Start MLP again" instead of only showing a connection error.
"""

from __future__ import annotations


def restarter(name):
    """A callable that starts server ``name`` again with the options it runs with now (read from
    its record: source, ports, host, gpu, workers, poll, server flags ...), or None when ``name``
    is not a server the manager knows (a URL, a model of a config file ...)."""
    if not isinstance(name, str):
        return None
    from tfserve_magic import manager

    try:
        record = manager.running_record(name)
    except (LookupError, OSError):
        return None
    if not (record.base_path or record.config):
        return None
    where = record.endpoint()
    options = dict(
        config=record.config,
        port=where.port or record.key.get("port", 8501),  # where its clients look for it
        port_retries=record.port_retries,
        host=record.key.get("host", record.host),  # as asked (the binary's record says 0.0.0.0)
        grpc_port=where.grpc_port or record.grpc_port,
        gpu=record.gpu,
        poll=record.poll,
        detach=record.detach,
        backend=record.backend,
        timeout=record.timeout,
        extra_args=list(record.extra_args),
        workers=record.workers,
    )

    def start_again():
        running = manager.find(name)
        if running is not None:
            return running
        return manager.start(name, None if record.config else record.base_path, **options)

    return start_again
