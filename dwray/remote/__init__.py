"""The tenant client: the ``Warehouse`` API over the gateway's S3 protocol (``dwray.connect(url=...)``).

- ``connection``: the boto3 client, how calls go out, which tenant the key acts for;
- ``errors``: S3 errors turned back into the dwray errors the gateway made them from;
- ``responses``: ``ObjectInfo`` and the other models rebuilt from S3 answers;
- ``uploads``: bodies streamed in bounded memory (one request, or a multipart upload);
- ``objects`` and ``warehouse``: ``GatewayWarehouse`` itself.
"""
from __future__ import annotations

from dwray.remote.warehouse import GatewayWarehouse

__all__ = ["GatewayWarehouse"]
