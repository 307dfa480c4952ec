"""How an annotation looks on the canvas: class-coloured labels, role-coloured train / validation regions with their
role written beside them, a clear selection highlight, and moves that stop at the slide's edge.

Smaller shapes sit on top of larger ones, so a click picks the smallest shape under the cursor (a small polygon drawn
on a large tissue outline), and small shapes are never hidden under large fills.
"""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsSimpleTextItem, QStyle, QStyleOptionGraphicsItem, QWidget
from shapely.geometry import MultiPolygon, Polygon

from gigapath_desktop.annotations import Annotation, Role

ROLE_COLORS = {Role.REGION: QColor(0, 120, 255), Role.VALIDATION: QColor(255, 140, 0)}
HIGHLIGHT = QColor(255, 230, 0)
HANDLE_PX = 8


def geometry_path(geometry: Polygon | MultiPolygon) -> QPainterPath:
    """A QPainterPath of polygons with holes (odd-even fill punches the holes)."""
    path = QPainterPath()
    path.setFillRule(Qt.FillRule.OddEvenFill)
    for polygon in getattr(geometry, "geoms", [geometry]):
        for ring in [polygon.exterior, *polygon.interiors]:
            path.addPolygon(QPolygonF([QPointF(x, y) for x, y in ring.coords]))
            path.closeSubpath()
    return path


def stacking(area: float) -> float:
    """Z value: above tiles (0) and the mask overlay (5), below drawing previews (20); smaller is higher."""
    return 10 + 5 / math.log2(2 + max(area, 0.0))


class AnnotationItem(QGraphicsPathItem):
    """One annotation on screen; `limits` (the slide, level-0 px) bounds where a drag can move it."""

    def __init__(self, annotation: Annotation, limits: QRectF) -> None:
        super().__init__(geometry_path(annotation.geometry))
        self.annotation = annotation
        self.limits = limits
        self.highlighted = False  # selected in the session (Qt's own selection only exists in the Select tool)
        self.tag: QGraphicsSimpleTextItem | None = None  # a region's title, beside it
        color = ROLE_COLORS.get(annotation.role, QColor(*annotation.cls.color))
        pen = QPen(color, 2)
        pen.setCosmetic(True)
        if annotation.role.is_area:
            pen.setStyle(Qt.PenStyle.DashLine if annotation.role is Role.REGION else Qt.PenStyle.DashDotLine)
            self.tag = QGraphicsSimpleTextItem(annotation.role.title, self)
            self.tag.setBrush(color)
            self.tag.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
            x0, y0, _, _ = annotation.bounds
            self.tag.setPos(x0, y0)
        else:
            fill = QColor(color)
            fill.setAlpha(70)
            self.setBrush(QBrush(fill))
        self.setPen(pen)
        self.setZValue(stacking(annotation.geometry.area))
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setToolTip(f"{annotation.role.title}: {annotation.name or annotation.cls.name}")

    def set_title(self, title: str) -> None:
        """Call a region what the list and the region choices call it (`AnnotationSet.region_titles`: "Train 2"), a
        named one after its role ("Validation held out"): the role is written beside every region."""
        if self.tag is not None:
            self.tag.setText(f"{self.annotation.role.title} {title}" if self.annotation.name else title)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:
        if change is QGraphicsItem.GraphicsItemChange.ItemPositionChange and isinstance(value, QPointF):
            r = self.path().boundingRect()
            x = min(max(value.x(), min(0.0, self.limits.left() - r.left())), max(0.0, self.limits.right() - r.right()))
            y = min(max(value.y(), min(0.0, self.limits.top() - r.top())), max(0.0, self.limits.bottom() - r.bottom()))
            return QPointF(x, y)
        return super().itemChange(change, value)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        selected = self.highlighted or bool(option.state & QStyle.StateFlag.State_Selected)
        option.state = option.state & ~QStyle.StateFlag.State_Selected  # no dashed box: our own highlight below
        super().paint(painter, option, widget)
        if not selected:
            return
        pen = QPen(HIGHLIGHT, 4)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())
        side = HANDLE_PX / max(painter.worldTransform().m11(), 1e-9)
        r = self.path().boundingRect()
        painter.setPen(QPen(Qt.GlobalColor.black, 0))
        painter.setBrush(HIGHLIGHT)
        for x, y in ((r.left(), r.top()), (r.right() - side, r.top()), (r.left(), r.bottom() - side),
                     (r.right() - side, r.bottom() - side)):
            painter.drawRect(QRectF(x, y, side, side))
