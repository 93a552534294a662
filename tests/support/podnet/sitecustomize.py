"""The pod network of the test node, for the Python processes it runs as pods.

Loaded by every pod process through PYTHONPATH (tests/support/node.py). It
plays two parts of a real node's network, and nothing else:

- The pod's own address: each pod has an address of its own in 127.0.0.0/8
  (``MODELGATE_POD_IP``). A server binding the wildcard address binds that
  address instead, as in the pod's network namespace, so two pods can both
  listen on 8080.
- ``localhost`` is the pod's own address: containers of one pod share its
  network, so a sidecar's listener is reached at ``localhost:<port>`` (the
  literal 127.0.0.1 stays the machine's, where the tests' own servers are).
- Cluster DNS and kube-proxy: a name ``<service>.<namespace>.svc[.cluster.local]``
  (or ``<service>`` and ``<service>.<namespace>`` from within the namespace)
  resolves to a ready endpoint of the Service, and the Service's port becomes
  the target port, from the map the node keeps in ``MODELGATE_POD_SERVICES``.
  Every other name resolves as usual.
"""

from __future__ import annotations

import json
import os
import socket

_POD_IP = os.environ.get("MODELGATE_POD_IP", "")
_SERVICES = os.environ.get("MODELGATE_POD_SERVICES", "")
_NAMESPACE = os.environ.get("MODELGATE_POD_NAMESPACE", "")
_WILDCARD = {None, "", "0.0.0.0", "::"}
_real_getaddrinfo = socket.getaddrinfo


def _service_names(name: str) -> list[str]:
    name = name.rstrip(".").lower()
    if name.endswith(".cluster.local"):
        name = name[: -len(".cluster.local")]
    if name.endswith(".svc"):
        return [name]
    if "." not in name and _NAMESPACE:
        return [f"{name}.{_NAMESPACE}.svc"]
    if name.count(".") == 1:
        return [f"{name}.svc"]
    return []


def _lookup(host: str, port: object) -> tuple[str, int] | None:
    candidates = _service_names(host)
    if not candidates or not _SERVICES:
        return None
    try:
        with open(_SERVICES, encoding="utf-8") as handle:
            services = json.load(handle)
    except (OSError, ValueError):
        return None
    for candidate in candidates:
        ports = services.get(candidate)
        if ports is None:
            continue
        target = ports.get(str(port if port is not None else 80))
        if not target:
            # A Service with no ready endpoint: the connection is refused.
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no ready endpoint")
        return target[0], int(target[1])
    return None


def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
    if _POD_IP and host in _WILDCARD and (flags & socket.AI_PASSIVE or host):
        return _real_getaddrinfo(_POD_IP, port, socket.AF_INET, type, proto, flags)
    if _POD_IP and isinstance(host, str) and host.lower().rstrip(".") == "localhost":
        return _real_getaddrinfo(_POD_IP, port, socket.AF_INET, type, proto, flags)
    if isinstance(host, str):
        found = _lookup(host, port)
        if found is not None:
            return _real_getaddrinfo(found[0], found[1], socket.AF_INET, type, proto, flags)
    return _real_getaddrinfo(host, port, family, type, proto, flags)


_real_bind = socket.socket.bind


def _bind(self, address):  # type: ignore[no-untyped-def]
    # asyncio binds numeric addresses without asking getaddrinfo.
    if (
        _POD_IP
        and self.family == socket.AF_INET
        and isinstance(address, tuple)
        and address[0] in _WILDCARD
    ):
        address = (_POD_IP, *address[1:])
    return _real_bind(self, address)


socket.getaddrinfo = _getaddrinfo
socket.socket.bind = _bind  # type: ignore[method-assign]
