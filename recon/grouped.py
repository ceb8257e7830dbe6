"""The console's page for a payout's grouped mismatch (`StagingEntryAdmin.group_view`): the group's members as
they are now, and the operator's form (accept with a write-off, or split: settle the chosen members)."""

from django import forms

from recon.models import Entry, EntryStatus, Transaction


def group_members(group: dict) -> list[dict]:
    """The members named by a staging entry's `metadata.group` (their versions at the time, or the versions that
    superseded them), in id order: id, order key, amount, status, effective date."""
    ids = group.get("member_transaction_ids") or []
    txns = Transaction.objects.filter(pk__in=ids).select_related("rule").order_by("transaction_id")
    dates = dict(
        Entry.objects.filter(transaction_id__in=ids, status=EntryStatus.EXPECTED).values_list(
            "transaction_id", "effective_date"
        )
    )
    return [
        {
            "transaction_id": str(t.pk),
            "logical_transaction_id": t.logical_transaction_id,
            "key": (t.metadata or {}).get(t.rule.match_key if t.rule else "order_id"),
            "amount": t.amount,
            "currency": t.currency,
            "status": t.status,
            "effective_date": dates.get(t.pk),
        }
        for t in txns
    ]


class GroupResolveForm(forms.Form):
    members = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        required=True,
        help_text="The members to settle; the others stay open (a split).",
    )
    write_off = forms.BooleanField(
        required=False,
        help_text="Book the whole difference on the rule's difference account (needs the recon.write_off permission).",
    )
    reason = forms.CharField(required=True, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, members: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        open_ = [m for m in members if m["status"] == "EXPECTED"]
        self.fields["members"].choices = [
            (m["transaction_id"], f"{m['logical_transaction_id']} {m['amount']} {m['currency']}") for m in open_
        ]
        self.fields["members"].initial = [m["transaction_id"] for m in open_]
