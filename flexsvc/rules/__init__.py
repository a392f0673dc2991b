"""Pure rules: validation schemas, date parsing, batch planning. No I/O, no Flask, no SQL:
everything here is testable without a database or a request.
"""
