"""Domain model of the library: targets, sessions (nights), frames, masters, registrations, stacks.

Measurements are real columns so they can be queried; a frame's star catalog is one compressed
binary blob. Rows are never deleted to reject something: ``status`` and ``reason`` say why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from oscdeep.db.base import Base, Created, IntPk, Json, utcnow
from oscdeep.types import FrameStatus


class Target(Base):
    """A sky object imaged over one or more sessions."""

    __tablename__ = "targets"

    id: Mapped[IntPk]
    name: Mapped[str] = mapped_column(String(255), unique=True)
    reference_frame_id: Mapped[int | None] = mapped_column(Integer())
    """Frame every light of this target is registered to (no foreign key: frames point here)."""
    created_at: Mapped[Created]

    sessions: Mapped[list[Session]] = relationship(back_populates="target")
    frames: Mapped[list[Frame]] = relationship(back_populates="target")

    def __repr__(self) -> str:
        return f"Target({self.name!r})"


class Session(Base):
    """One imaging run (usually a night) with one camera: its lights and calibration frames."""

    __tablename__ = "sessions"

    id: Mapped[IntPk]
    name: Mapped[str] = mapped_column(String(255), unique=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"), index=True)
    night: Mapped[dt.date | None] = mapped_column(Date())
    source_path: Mapped[str | None] = mapped_column(Text())
    notes: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[Created]

    target: Mapped[Target | None] = relationship(back_populates="sessions")
    frames: Mapped[list[Frame]] = relationship(back_populates="session")

    def __repr__(self) -> str:
        return f"Session({self.name!r})"


class Frame(Base):
    """One source file: its identity, acquisition metadata, status and quality measurements."""

    __tablename__ = "frames"

    id: Mapped[IntPk]
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"), index=True)

    # identity
    path: Mapped[str] = mapped_column(Text(), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    file_size: Mapped[int] = mapped_column(BigInteger())
    file_format: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[Created]

    # acquisition
    kind: Mapped[str] = mapped_column(String(16), index=True)
    kind_source: Mapped[str] = mapped_column(String(16), default="header")
    camera_make: Mapped[str | None] = mapped_column(String(255))
    camera_model: Mapped[str | None] = mapped_column(String(255))
    instrument: Mapped[str | None] = mapped_column(String(255))
    telescope: Mapped[str | None] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer())
    height: Mapped[int] = mapped_column(Integer())
    bayer_pattern: Mapped[str | None] = mapped_column(String(4))
    row_order: Mapped[str | None] = mapped_column(String(16))
    exposure: Mapped[float | None] = mapped_column(Float())
    iso: Mapped[int | None] = mapped_column(Integer())
    gain: Mapped[float | None] = mapped_column(Float())
    offset: Mapped[float | None] = mapped_column(Float())
    temperature: Mapped[float | None] = mapped_column(Float())
    set_temperature: Mapped[float | None] = mapped_column(Float())
    xbinning: Mapped[int] = mapped_column(Integer(), default=1)
    ybinning: Mapped[int] = mapped_column(Integer(), default=1)
    filter: Mapped[str | None] = mapped_column(String(64))
    object: Mapped[str | None] = mapped_column(String(255))
    date_obs: Mapped[dt.datetime | None] = mapped_column(DateTime(), index=True)
    black_level: Mapped[float | None] = mapped_column(Float())
    white_level: Mapped[float | None] = mapped_column(Float())
    focal_length: Mapped[float | None] = mapped_column(Float())
    pixel_size: Mapped[float | None] = mapped_column(Float())
    header: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)

    # status
    status: Mapped[str] = mapped_column(String(16), default=FrameStatus.ACCEPTED, index=True)
    reason: Mapped[str | None] = mapped_column(Text())

    # quality, filled by analysis
    fwhm: Mapped[float | None] = mapped_column(Float())
    roundness: Mapped[float | None] = mapped_column(Float())
    eccentricity: Mapped[float | None] = mapped_column(Float())
    star_count: Mapped[int | None] = mapped_column(Integer())
    background: Mapped[float | None] = mapped_column(Float())
    noise: Mapped[float | None] = mapped_column(Float())
    snr: Mapped[float | None] = mapped_column(Float())
    weight: Mapped[float | None] = mapped_column(Float())
    analyzed_at: Mapped[dt.datetime | None] = mapped_column(DateTime())
    analysis_key: Mapped[str | None] = mapped_column(String(64))

    # calibration applied to this light (set when it is calibrated for analysis or stacking)
    bias_id: Mapped[int | None] = mapped_column(ForeignKey("master_calibrations.id"))
    dark_id: Mapped[int | None] = mapped_column(ForeignKey("master_calibrations.id"))
    flat_id: Mapped[int | None] = mapped_column(ForeignKey("master_calibrations.id"))
    dark_scale: Mapped[float | None] = mapped_column(Float())
    calibrated_at: Mapped[dt.datetime | None] = mapped_column(DateTime())

    star_catalog: Mapped[bytes | None] = mapped_column(LargeBinary(), deferred=True)

    session: Mapped[Session] = relationship(back_populates="frames")
    target: Mapped[Target | None] = relationship(back_populates="frames")
    registrations: Mapped[list[Registration]] = relationship(
        back_populates="frame", foreign_keys="Registration.frame_id"
    )
    bias_master: Mapped[MasterCalibration | None] = relationship(foreign_keys=[bias_id])
    dark_master: Mapped[MasterCalibration | None] = relationship(foreign_keys=[dark_id])
    flat_master: Mapped[MasterCalibration | None] = relationship(foreign_keys=[flat_id])

    @property
    def camera(self) -> str | None:
        """Best single name for the camera: instrument, else make and model."""
        if self.instrument:
            return self.instrument
        parts = [p for p in (self.camera_make, self.camera_model) if p]
        return " ".join(parts) or None

    def __repr__(self) -> str:
        return f"Frame({self.id}, {self.kind}, {self.path!r})"


class MasterCalibration(Base):
    """A master bias, dark, flat or dark-flat file and what it was built from."""

    __tablename__ = "master_calibrations"
    __table_args__ = (UniqueConstraint("group_key", "version"),)

    id: Mapped[IntPk]
    kind: Mapped[str] = mapped_column(String(16), index=True)
    group_key: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer(), default=1)
    path: Mapped[str] = mapped_column(Text())
    inputs_hash: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    camera: Mapped[str | None] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer())
    height: Mapped[int] = mapped_column(Integer())
    bayer_pattern: Mapped[str | None] = mapped_column(String(4))
    xbinning: Mapped[int] = mapped_column(Integer(), default=1)
    ybinning: Mapped[int] = mapped_column(Integer(), default=1)
    gain: Mapped[float | None] = mapped_column(Float())
    iso: Mapped[int | None] = mapped_column(Integer())
    offset: Mapped[float | None] = mapped_column(Float())
    exposure: Mapped[float | None] = mapped_column(Float())
    temperature: Mapped[float | None] = mapped_column(Float())
    temperature_min: Mapped[float | None] = mapped_column(Float())
    temperature_max: Mapped[float | None] = mapped_column(Float())
    date_start: Mapped[dt.datetime | None] = mapped_column(DateTime())
    date_end: Mapped[dt.datetime | None] = mapped_column(DateTime())
    filter: Mapped[str | None] = mapped_column(String(64))
    n_frames: Mapped[int] = mapped_column(Integer())
    options: Mapped[Json]
    median: Mapped[float | None] = mapped_column(Float())
    noise: Mapped[float | None] = mapped_column(Float())
    hot_pixels: Mapped[int | None] = mapped_column(Integer())
    software_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Created]

    session: Mapped[Session | None] = relationship()
    sources: Mapped[list[MasterSource]] = relationship(
        back_populates="master", cascade="all, delete-orphan"
    )


class MasterSource(Base):
    """Which frames a master calibration was built from."""

    __tablename__ = "master_sources"

    master_id: Mapped[int] = mapped_column(ForeignKey("master_calibrations.id"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True)

    master: Mapped[MasterCalibration] = relationship(back_populates="sources")
    frame: Mapped[Frame] = relationship()


class Registration(Base):
    """Transform from a frame's pixels to its reference frame's pixels (3x3, row-major)."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("frame_id", "reference_id"),)

    id: Mapped[IntPk]
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), index=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("frames.id"))
    model: Mapped[str] = mapped_column(String(16))
    matrix: Mapped[list[float]] = mapped_column(JSON())
    rms: Mapped[float | None] = mapped_column(Float())
    n_matches: Mapped[int | None] = mapped_column(Integer())
    n_inliers: Mapped[int | None] = mapped_column(Integer())
    options: Mapped[Json]
    created_at: Mapped[Created]

    frame: Mapped[Frame] = relationship(back_populates="registrations", foreign_keys=[frame_id])
    reference: Mapped[Frame] = relationship(foreign_keys=[reference_id])


class Stack(Base):
    """An integration of a selection of lights: its query, options, inputs and result."""

    __tablename__ = "stacks"

    id: Mapped[IntPk]
    name: Mapped[str] = mapped_column(String(255), unique=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"))
    selection: Mapped[str | None] = mapped_column(Text())
    options: Mapped[Json]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    output_path: Mapped[str | None] = mapped_column(Text())
    n_frames: Mapped[int] = mapped_column(Integer(), default=0)
    total_exposure: Mapped[float | None] = mapped_column(Float())
    stats: Mapped[Json]
    wall_time: Mapped[float | None] = mapped_column(Float())
    software_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Created]
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime())

    target: Mapped[Target | None] = relationship()
    members: Mapped[list[StackFrame]] = relationship(
        back_populates="stack", cascade="all, delete-orphan"
    )
    products: Mapped[list[Product]] = relationship(
        back_populates="stack", cascade="all, delete-orphan", order_by="Product.id"
    )


class StackFrame(Base):
    """A frame's part in a stack: its weight, normalisation and rejection statistics."""

    __tablename__ = "stack_frames"

    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), primary_key=True)
    weight: Mapped[float | None] = mapped_column(Float())
    rejected_fraction: Mapped[float | None] = mapped_column(Float())
    stats: Mapped[Json]

    stack: Mapped[Stack] = relationship(back_populates="members")
    frame: Mapped[Frame] = relationship()


class Product(Base):
    """A finished picture made from a stack: gradient removal, colour and stretch applied."""

    __tablename__ = "products"

    id: Mapped[IntPk]
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id"), index=True)
    path: Mapped[str] = mapped_column(Text())
    format: Mapped[str] = mapped_column(String(16))
    params: Mapped[Json]
    stats: Mapped[Json]
    wall_time: Mapped[float | None] = mapped_column(Float())
    software_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Created]

    stack: Mapped[Stack] = relationship(back_populates="products")


__all__ = [
    "Frame",
    "MasterCalibration",
    "MasterSource",
    "Product",
    "Registration",
    "Session",
    "Stack",
    "StackFrame",
    "Target",
    "utcnow",
]
