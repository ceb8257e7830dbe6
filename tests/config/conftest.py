from tests.recon.conftest import (  # noqa: F401  # noqa: F401
    ledger,
    merchant,
    operator,
    operator_api,
    other_merchant_operator_api,
    viewer,
    viewer_api,
)
