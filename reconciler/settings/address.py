"""``HOST:PORT``, parsed once where it is read (site.yaml's ``listen``, ``--listen``)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class Address(NamedTuple):
    """A host (name or IP address, an IPv6 one without brackets) and a TCP port."""

    host: str
    port: int

    @classmethod
    def parse(cls, address: str) -> Address:
        """``HOST:PORT`` (an IPv6 host in brackets, ``[::1]:8080``)."""
        host, _, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit():
            raise ValueError(f"should be HOST:PORT, e.g. 127.0.0.1:8080 (got {address!r})")
        if int(port) > 65535:
            raise ValueError(f"port {port} of {address!r} is not a TCP port (0 to 65535)")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise ValueError(f"{host!r} of {address!r} is neither an IP address nor a host name") from None
        return cls(host, int(port))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # a string first, so that `listen: 8080` is refused as "should be a string; quote it"
        return core_schema.no_info_after_validator_function(cls.parse, core_schema.str_schema())
