"""API routes of recon (mounted under /api/ by config.urls). Every path works with and without a trailing
slash."""

from django.urls import re_path

from recon import views

ID = r"(?P<{}>[^/]+)"

urlpatterns = [
    re_path(r"^merchants/?$", views.MerchantListView.as_view(), name="recon-merchants"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/?$", views.MerchantDetailView.as_view(),
            name="recon-merchant"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/accounts/?$", views.AccountListView.as_view(),
            name="recon-accounts"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/accounts/{ID.format('account_id')}/?$",
            views.AccountDetailView.as_view(), name="recon-account"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/recon-rules/?$", views.ReconRuleListView.as_view(),
            name="recon-rules"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/recon-rules/{ID.format('rule_id')}/?$",
            views.ReconRuleDetailView.as_view(), name="recon-rule"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/transactions/?$", views.TransactionListView.as_view(),
            name="recon-transactions"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/exports/(?P<table>[a-z-]+)/?$", views.ExportView.as_view(),
            name="recon-exports"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/periods/?$", views.ClosedPeriodListView.as_view(),
            name="recon-periods"),
    re_path(rf"^merchants/{ID.format('merchant_id')}/periods/{ID.format('period_id')}/reopen/?$",
            views.ClosedPeriodReopenView.as_view(), name="recon-period-reopen"),
    re_path(rf"^accounts/{ID.format('account_id')}/balances/?$", views.AccountBalancesView.as_view(),
            name="recon-account-balances"),
    re_path(rf"^accounts/{ID.format('account_id')}/staging-entries/?$", views.StagingEntryListView.as_view(),
            name="recon-staging-entries"),
    re_path(rf"^accounts/{ID.format('account_id')}/staging-entries/files/?$", views.StagingEntryFileView.as_view(),
            name="recon-staging-entry-files"),
    re_path(rf"^accounts/{ID.format('account_id')}/statements/?$", views.AccountStatementListView.as_view(),
            name="recon-account-statements"),
    re_path(rf"^accounts/{ID.format('account_id')}/entries/?$", views.AccountEntryListView.as_view(),
            name="recon-account-entries"),
    re_path(rf"^staging-entries/{ID.format('staging_entry_id')}/resolve/?$",
            views.StagingEntryResolveView.as_view(), name="recon-staging-entry-resolve"),
    re_path(rf"^staging-entries/{ID.format('staging_entry_id')}/?$", views.StagingEntryDetailView.as_view(),
            name="recon-staging-entry"),
    re_path(r"^recon-engine/trigger/?$", views.TriggerView.as_view(), name="recon-trigger"),
    re_path(r"^recon-engine/summary/?$", views.SummaryView.as_view(), name="recon-summary"),
]
