"""Tests of envs.sockshop.loadtest: the reference Locust load test
(https://github.com/microservices-demo/load-test) every backend drives."""

from __future__ import annotations

from envs.sockshop.loadtest import CUSTOMER, HATCH_RATE_PER_S, LOAD_TEST_LOOP, endpoint_names
from envs.sockshop.topology import CATALOGUE, ROUTES


def test_the_nine_request_loop() -> None:
    assert [s.route for s in LOAD_TEST_LOOP] == [
        "GET /catalogue", "GET /", "GET /login", "GET /category.html", "GET /detail.html",
        "DELETE /cart", "POST /cart", "GET /basket.html", "POST /orders"]
    for step in LOAD_TEST_LOOP:
        assert step.route in ROUTES
    assert LOAD_TEST_LOOP[4].name == "GET /detail.html?id={item}"
    assert CUSTOMER == ("user", "password")
    assert HATCH_RATE_PER_S == 5.0


def test_endpoint_names() -> None:
    names = endpoint_names()
    assert len(names) == 18 == len(set(names))
    assert names == tuple(sorted(names))
    for item in CATALOGUE:
        assert f"GET /detail.html?id={item.item_id}" in names
    fixed = {"GET /catalogue", "GET /", "GET /login", "GET /category.html", "DELETE /cart",
             "POST /cart", "GET /basket.html", "POST /orders"}
    assert set(names) - fixed == {f"GET /detail.html?id={i.item_id}" for i in CATALOGUE}
