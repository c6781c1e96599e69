"""The operators' config API in process: admins only, every change validated."""

from __future__ import annotations

from tests.unit.conftest import Node


def test_only_admins_reach_the_ops_api(node: Node) -> None:
    assert node.call("GET", "/v1/ops/config").status_code == 401
    r = node.call("GET", "/v1/ops/config", "alice")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    r = node.call("GET", "/v1/ops/config", headers=admin)
    assert r.status_code == 200 and isinstance(r.json()["config"], dict)


def test_an_unknown_key_is_refused_with_the_reason_and_nothing_applies(node: Node) -> None:
    admin = {"Authorization": f"Bearer {node.token('root', roles=('admin',))}"}
    before = node.call("GET", "/v1/ops/config", headers=admin).json()
    r = node.call("PUT", "/v1/ops/config", headers=admin, json={"no_such_setting": 1})
    assert r.status_code == 400 and "no_such_setting" in r.json()["error"]["message"]
    assert node.call("GET", "/v1/ops/config", headers=admin).json() == before
    assert node.call("PUT", "/v1/ops/config", headers=admin, content=b"[1]").status_code == 400
