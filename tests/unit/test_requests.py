"""The request checks every service shares (concord.serving.requests): field names and wording."""

from __future__ import annotations

import pytest

from concord.errors import FailedPrecondition, InvalidArgument
from concord.proto.v1 import common_pb2
from concord.serving import requests
from concord.wire import ModelId

SERVED = ModelId("concord-scorer", "3")


def test_check_model_accepts_the_served_model_or_none() -> None:
    requests.check_model(common_pb2.ModelRef(), SERVED, "scorer")
    requests.check_model(common_pb2.ModelRef(name="concord-scorer"), SERVED, "scorer")
    requests.check_model(common_pb2.ModelRef(name="concord-scorer", version="3"), SERVED, "scorer")


@pytest.mark.parametrize(
    "wanted",
    [common_pb2.ModelRef(name="other"), common_pb2.ModelRef(name="concord-scorer", version="2")],
)
def test_check_model_refuses_another_model_naming_the_service(wanted: common_pb2.ModelRef) -> None:
    with pytest.raises(FailedPrecondition, match="this scorer serves"):
        requests.check_model(wanted, SERVED, "scorer")


def test_page_size_defaults_and_bounds() -> None:
    assert requests.page_size(common_pb2.PageRequest()) == requests.DEFAULT_PAGE_SIZE
    assert requests.page_size(common_pb2.PageRequest(page_size=7)) == 7
    with pytest.raises(InvalidArgument) as err:
        requests.page_size(common_pb2.PageRequest(page_size=requests.MAX_PAGE_SIZE + 1))
    assert err.value.violations[0].field == "page.page_size"
    assert "must be between 1 and 1000" in err.value.message


def test_counts_and_texts_name_the_field() -> None:
    with pytest.raises(InvalidArgument, match="pairs: is empty; send at least one pair"):
        requests.check_count(0, "pairs", 4, "pairs")
    with pytest.raises(InvalidArgument, match="has 5 items; the limit per request is 4"):
        requests.check_count(5, "items", 4)
    with pytest.raises(InvalidArgument) as err:
        requests.check_texts(["ok", " ", "x" * 9], "prompts", max_chars=8)
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("prompts[1]", "is empty"),
        ("prompts[2]", "has 9 characters; the limit is 8"),
    ]
    assert requests.check_text("fine", "text", 8) == "fine"
    with pytest.raises(InvalidArgument, match="id: is empty"):
        requests.require("", "id")
