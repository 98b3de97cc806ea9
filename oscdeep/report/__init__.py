"""Reports people can look at: one self-contained HTML page of a night, a target or a stack.

``model`` holds what a page shows (frozen dataclasses), ``plots`` draws quality plots as
inline SVG and ``html`` renders the page. Gathering the data from the library is
``oscdeep.pipeline.report.gather``; nothing here touches the database.
"""

from oscdeep.report.html import render
from oscdeep.report.model import (
    FrameRow,
    IntegrationLine,
    KindCount,
    MasterRow,
    ProductSection,
    ReportData,
    SessionSection,
    StackSection,
)

__all__ = [
    "FrameRow",
    "IntegrationLine",
    "KindCount",
    "MasterRow",
    "ProductSection",
    "ReportData",
    "SessionSection",
    "StackSection",
    "render",
]
