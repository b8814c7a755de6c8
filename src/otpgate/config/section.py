"""The base of each component's settings model.

``Settings`` (``config/settings.py``) composes one such model per component; the
reference generator (``config/reference.py``) writes one section per model, titled
``SECTION_TITLE`` and introduced by the model's docstring.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

# ``Field(json_schema_extra=SECRET)``: a credential that is not a SecretStr (a key's
# digest, an account id); the reference leaves it empty in ``.env.example``.
SECRET: dict[str, Any] = {"secret": True}
# ``Field(json_schema_extra=COMMENTED)``: left commented out in ``.env.example`` even
# with a default, because setting it at all changes behaviour (see the field).
COMMENTED: dict[str, Any] = {"commented": True}


class Section(BaseModel):
    """One component's fields, with their validators and the properties that read only
    them; checks across components belong to ``Settings``."""

    SECTION_TITLE: ClassVar[str]
