"""Configuration: loading a mapping (YAML with positions, ``extends``, ``${VAR}``), checking it
against the JSON Schema, and compiling every template in it at load."""
