from tests.recon.conftest import (
    other_merchant_operator_api,  # noqa: F401
)
