"""The application layer: small use-case services, each owning its validation, its audit
records and its transactions. The only thing the edges (API, web pages, CLI) call."""

from service.matching.actors import SYSTEM, Actor, Permission

__all__ = ["SYSTEM", "Actor", "Permission"]
