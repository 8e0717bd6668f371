"""Schemathesis hooks for tests/schemathesis.rs (loaded through SCHEMATHESIS_HOOKS).

- A serializer for `application/x-ndjson`, the body of client-streaming methods: the document's
  schema is one message, written as one line.
- `positive_data_acceptance_but_business_rules`: schemathesis' own `positive_data_acceptance`,
  except that a refusal by one of the demo backends' business rules (listed below from
  src/demo/*.rs) is not a failure. Those are the backends' to decide and no document of the
  gateway's can say them; a refusal by the gateway itself (its messages are none of these) still
  fails, as does any refusal this list does not name.
"""

import json
import re

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

# The demo backends' INVALID_ARGUMENT and FAILED_PRECONDITION messages (HTTP 400), from
# src/demo/*.rs. NOT_FOUND (404) and ALREADY_EXISTS (409) need no entry: schemathesis expects
# those for valid data anyway. A gateway refusal of a CSV or NDJSON line says "line N of the
# request stream", which `^line [0-9]+: ` does not match.
BUSINESS_RULES = [
    r"^email .* is not an email address$",
    r"^page_size must not be negative$",
    r"^user_id is required$",
    r"^an order needs at least one item$",
    r"^quantity of .* must be positive$",
    r"^interval must be between 0 and 60s$",
    r"^all line items of one call must be for the same order$",
    r"^item is required$",
    r"^no line items were sent$",
    r"^order .* is no longer open$",
    r"^a cart action needs one of add, remove_product_id, clear$",
    r"^cannot add .* to .*$",
    r"^a positive amount with a currency_code is required$",
    r"^the card was declined$",
    r"^unknown card token .*; try tok_visa$",
    r"^payment .* was refunded already$",
    r"^product is required$",
    r"^product\.name is required$",
    r"^product\.price with a currency_code is required$",
    r"^expected text/csv, got .*$",
    r"^the CSV is not UTF-8$",
    r"^line [0-9]+: (expected name,category,price,stock|price is not a whole number|stock is not a whole number)$",
]


def is_business_rule(response) -> bool:
    try:
        message = json.loads(response.content)["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(message, str) and any(re.search(rule, message, re.DOTALL) for rule in BUSINESS_RULES)


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    # Compact JSON has no newline inside: one message, one line.
    return (json.dumps(value, separators=(",", ":")) + "\n").encode()


@schemathesis.check
def positive_data_acceptance_but_business_rules(ctx, response, case):
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400 and is_business_rule(response):
            return None
        raise
