"""Admin widgets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.admin import widgets
from django.core.exceptions import ValidationError


class AutocompleteSelect(widgets.AutocompleteSelect):
    """Django's autocomplete select, which does not crash on a value that is not a key.

    Django 5.2 renders a submitted value back into a query (`optgroups`): a POST of `user=abc`
    raises ValueError while the form is redisplayed with its error, and the admin answers 500.
    Values the target field refuses are left out of that query; the form field itself still
    reports them ("Select a valid choice").
    """

    def optgroups(self, name: str, value: Sequence[str], attr: Any = None) -> Any:
        remote = self.field.remote_field
        opts = remote.model._meta
        target = opts.get_field(getattr(remote, "field_name", None) or opts.pk.name)
        keys = []
        for item in value:
            try:
                target.run_validators(target.to_python(item))
            except (ValidationError, ValueError, TypeError, OverflowError):
                continue
            keys.append(item)
        return super().optgroups(name, keys, attr)
