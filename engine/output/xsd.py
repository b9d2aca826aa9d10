"""The XSD check of written XML parts: lxml's verdict in words a bookkeeper can act on.

Light on purpose (lxml and the engine's errors only): the helper process that checks
records on the machine's other core (:mod:`engine.output.xsd_process`) imports nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from engine.errors import MappingError, OrderError

#: Parses a written record for the XSD: no entities, no network, and no indentation in the
#: tree (every written text is stripped, so only indentation is blank): parsing ~35% faster.
#: huge_tree lifts libxml2's size limits, which the tree built in memory never had: the text
#: is our own, escaped, and declares no entities.
RECORD_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True,
                                huge_tree=True)


class Validator:
    """The mapping's XSD, applied to one part (a record's element, the header) at a time."""

    def __init__(self, xsd_path: Path | None):
        self.xsd_path = xsd_path
        self.schema = None
        if xsd_path is not None:
            try:
                self.schema = etree.XMLSchema(etree.parse(str(xsd_path)))
            except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                raise MappingError(f"the XSD {xsd_path} is not a valid schema: {exc}") from None

    def problems(self, element: etree._Element) -> list[str]:
        if self.schema is None or self.schema.validate(element):
            return []
        return [f"{e.path.lstrip('/')}: {_short(e.message)}" for e in self.schema.error_log]

    def check(self, element: etree._Element) -> None:
        problems = self.problems(element)
        if problems:
            raise OrderError("the XSD refuses it: " + "; ".join(problems[:3]), field="output.record")

    def check_text(self, xml: bytes) -> etree._Element:
        """Parse a record's written text and check it; the parsed element."""
        try:
            element = etree.fromstring(xml, RECORD_PARSER)
        except etree.XMLSyntaxError as exc:  # the writer escapes every text: a bug if it happens
            raise OrderError(f"the written XML does not parse: {exc}", field="output.record") from None
        self.check(element)
        return element


_VALUE = re.compile(r"The value '.*?' (is|has)", re.DOTALL)
#: "Element 'OrderDate': 'Jan Jansen' is not a valid value of the atomic type 'xs:date'."
_TYPED_VALUE = re.compile(r"^(Element '[^']*': )'.*?' (is not a valid value of the)", re.DOTALL)


def _short(message: str) -> str:
    """lxml's message without the refused value: it may be an e-mail address or a name."""
    # "Element 'Email': [facet 'pattern'] The value 'x' is not accepted by the pattern '…'."
    message = _VALUE.sub(r"The value \1", message)
    message = _TYPED_VALUE.sub(r"\1The value \2", message)
    return message.replace("Element ", "", 1) if message.startswith("Element ") else message
