"""Conversion: one record to one invoice (the stages, lines, VAT, money, customers and debtor
numbers, credit notes), with nothing of input or output in it."""
