"""The collector behind ``python -m aiologsinks receive`` (private: see ``_cli/receive.py``)."""
