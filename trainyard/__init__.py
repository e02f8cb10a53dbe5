"""Trainyard: labeled images in, trained, evaluated, versioned image classifiers out.

This package holds what every service and client shares (configuration helpers,
errors, logging, RPC plumbing, the object store, the local stack) and the API
stubs generated from `protos/` (``trainyard.<service>.v1``). The services live in
``services/`` (imported as ``trainyard.services``), the clients in ``clients/``.
"""

__version__ = "0.1.0"
