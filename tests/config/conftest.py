from tests.recon.conftest import (ledger, merchant, operator, operator_api, other_merchant_operator_api,  # noqa: F401
                                  viewer, viewer_api)
