"""One reading of a SAM template: AWS's own SAM transform, then one resolver for one stack.

``resolve_stack(template, overrides)`` is the entry point for everything that needs to know what
a template deploys: the local world's provisioning and Lambda runtime, ``make invoke``, the
template tests and ``scripts/translate_template.py``.
"""

from samstack.resolve import DEFAULT_ACCOUNT_ID, DEFAULT_STACK_NAME, ResolvedStack, Resource, resolve_stack
from samstack.transform import (
    DEFAULT_REGION,
    LOCAL_CODE_BUCKET,
    TemplateError,
    TranslationError,
    load_template,
    split_overrides,
    translate,
    with_mapping_values,
)

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "DEFAULT_STACK_NAME",
    "LOCAL_CODE_BUCKET",
    "ResolvedStack",
    "Resource",
    "TemplateError",
    "TranslationError",
    "load_template",
    "resolve_stack",
    "split_overrides",
    "translate",
    "with_mapping_values",
]
