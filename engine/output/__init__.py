"""Output: the invoice document, its aXML rendering and XSD check, the API body, and the
preview of Asperion's import screen."""
