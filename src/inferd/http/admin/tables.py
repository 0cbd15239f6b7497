"""The proxy toolkit's monitoring routes ``/tables`` and ``/tables/{name}`` (admin scope,
read-only).

Also under ``/admin/v1/tables``. Rows come from ``inferd.store.monitor`` (through
``services.control.tables``) with secrets and hashes redacted.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from inferd.errors import NotFound
from inferd.http.auth import AdminDep
from inferd.http.deps import ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c

router = APIRouter(tags=["admin"])


@endpoint(router, "GET", "/tables", access="audit", answer=c.TableNames)
@endpoint(router, "GET", "/admin/v1/tables", access="audit", answer=c.TableNames)
async def list_tables(services: ServicesDep, _admin: AdminDep) -> Response:
    return json_response({"tables": services.control.tables.tables()})


@endpoint(router, "GET", "/tables/{name}", access="audit", answer=c.TableRows, errors=(404, 503))
@endpoint(router, "GET", "/admin/v1/tables/{name}", access="audit", answer=c.TableRows,
          errors=(404, 503))
async def table_rows(name: str, services: ServicesDep, _admin: AdminDep) -> Response:
    """The newest 100 rows of an allowed table."""
    rows = await services.control.tables.rows(name)
    if rows is None:
        raise NotFound(f"No table named '{name}' is available.", code="table_not_found")
    return json_response({"table": name, "data": rows})
