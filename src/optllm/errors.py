"""The one exception type users can cause; the CLI turns it into exit code 2 and one line."""
from __future__ import annotations


class OptLLMError(Exception):
    """A problem with the user's input (file, option, data) described in one line.

    The message names what is wrong and where (file, row, column, option), so the CLI can
    print it as is.
    """
