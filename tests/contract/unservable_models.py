"""Models the engine must refuse at start-up.

`MODELS=tests.contract.unservable_models:Base`: a class that sets `__resource__` cannot be
served; `...:EmptyBase`: nothing can be served.
"""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    """Servable: it alone would make a fine API."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


class Ledger(Base):
    """Named as a resource, but its primary key is two columns."""

    __tablename__ = "ledger"
    __resource__ = "ledger"

    account: Mapped[str] = mapped_column(String(10), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)


class EmptyBase(DeclarativeBase):
    pass


class Pair(EmptyBase):
    """Not named, so only left out with a warning; then nothing is left to serve."""

    __tablename__ = "pairs"

    left: Mapped[int] = mapped_column(Integer, primary_key=True)
    right: Mapped[int] = mapped_column(Integer, primary_key=True)
