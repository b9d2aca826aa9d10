"""Expressions: the Jinja sandbox, the filters the mapping may use, the code generator that
turns templates into Python, and the projection of the fields a mapping reads."""
