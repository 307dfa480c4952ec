"""The slide viewer: a QGraphicsView in level-0 pixel coordinates with streamed pyramid tiles, annotations drawn
from the AnnotationSet (the model), drawing tools, and a mask overlay.

The viewer never edits annotations itself: finished shapes, moves and selections go out as signals, and the window
turns them into undoable edits on the session model, whose change events redraw the items.
"""
from __future__ import annotations

import enum
import math

import numpy as np
import shapely
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView
from shapely.geometry import LineString, Point, Polygon

from gigapath_desktop.annotations import TISSUE, Annotation, AnnotationClass, AnnotationSet, Kind
from gigapath_desktop.slides import Slide
from gigapath_desktop.ui.annotation_items import AnnotationItem
from gigapath_desktop.ui.scale_bar import ScaleBar
from gigapath_desktop.ui.tiles import TILE, TileCache, TileKey, TileLoader, to_qimage

BRUSH_SIZES = (2, 400)  # brush diameter on screen, px


class Tool(str, enum.Enum):
    PAN = "pan"
    SELECT = "select"
    RECTANGLE = "rectangle"
    POLYGON = "polygon"
    BRUSH = "brush"
    ERASER = "eraser"


class SlideViewer(QGraphicsView):
    """Pan/zoom viewer of one slide; emits finished drawings and the level-0 cursor position."""

    shape_drawn = Signal(object)  # Annotation
    erased = Signal(object)  # shapely geometry to subtract from labels
    moved = Signal(object, float, float)  # Annotation, dx, dy (level-0 px)
    cursor_moved = Signal(float, float)
    view_changed = Signal()
    selection_changed = Signal(list)  # ids of the selected annotations
    brush_changed = Signal(int)
    error = Signal(str)

    def __init__(self, annotations: AnnotationSet) -> None:
        super().__init__()
        self.setScene(QGraphicsScene(self))
        self.scene().selectionChanged.connect(self._on_selection)
        self.setRenderHints(QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setMouseTracking(True)
        self.setBackgroundBrush(QColor(40, 40, 40))
        self.annotations = annotations
        annotations.subscribe(self._on_annotations)
        self.slide: Slide | None = None
        self.loader: TileLoader | None = None
        self.cache = TileCache()
        self.tool = Tool.PAN
        self.brush_pixels = 24  # brush diameter on screen; in slide pixels it follows the zoom
        self.current_class: AnnotationClass | None = None
        self.level = 0
        self._tiles: dict[TileKey, QGraphicsPixmapItem] = {}
        self._items: dict[str, AnnotationItem] = {}
        self._selection: set[str] = set()  # the model's selection, shown whatever the tool
        self._quiet = False  # True while the viewer changes Qt's selection itself: not a user's choice
        self._overlay: QGraphicsPixmapItem | None = None
        self._drawing: list[QPointF] = []
        self._preview: QGraphicsPathItem | QGraphicsRectItem | None = None
        self._space_pan = False
        self._press_selection: dict[QGraphicsItem, QPointF] = {}
        self._refresh = QTimer(self, singleShot=True, interval=30, timeout=self._request_tiles)
        self.scale_bar = ScaleBar(self.viewport())
        self.set_tool(Tool.PAN)

    # --- slide ------------------------------------------------------------------------------------------------
    def set_slide(self, slide: Slide, backdrop: np.ndarray | None = None) -> None:
        """Show `slide`; `backdrop` is its thumbnail (up to 1024 px) when the caller made it off the GUI thread."""
        if self.loader is not None:
            self.loader.close()
        self._cancel_drawing()  # (its preview item goes with the scene)
        self._press_selection = {}
        self.scene().clear()
        self._tiles.clear()
        self._items.clear()
        self._overlay = None
        self.cache = TileCache()
        self.slide = slide
        self.loader = TileLoader(slide)
        self.loader.loaded.connect(self._on_tile)
        self.loader.failed.connect(self.error)
        w, h = slide.dimensions
        self.scene().setSceneRect(QRectF(-0.05 * w, -0.05 * h, 1.1 * w, 1.1 * h))
        thumb = backdrop if backdrop is not None else slide.thumbnail(1024)
        background = self.scene().addPixmap(QPixmap.fromImage(to_qimage(thumb)))
        background.setScale(w / thumb.shape[1])
        background.setZValue(-10)
        background.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        for annotation in self.annotations:
            self._add_item(annotation)
        self._retitle()
        self.fit()

    def fit(self) -> None:
        if self.slide is not None:
            self.fitInView(QRectF(0, 0, *self.slide.dimensions), Qt.AspectRatioMode.KeepAspectRatio)
            self._changed()

    def one_to_one(self) -> None:
        self.zoom_to(1.0)

    @property
    def scale_factor(self) -> float:
        """Screen pixels per level-0 pixel."""
        return self.transform().m11()

    def zoom_to(self, scale: float, anchor: QPointF | None = None) -> None:
        scale = float(np.clip(scale, 1e-4, 32.0))
        factor = scale / self.scale_factor
        if anchor is None:
            self.scale(factor, factor)
        else:
            before = self.mapToScene(anchor.toPoint())
            self.scale(factor, factor)
            after = self.mapToScene(anchor.toPoint())
            self.translate(after.x() - before.x(), after.y() - before.y())
        self._changed()

    def centre_on(self, x: float, y: float) -> None:
        self.centerOn(x, y)
        self._changed()

    def visible_rect(self) -> QRectF:
        """The visible part of the slide, level-0 pixels."""
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def set_overlay(self, image: QImage | None, x: float = 0, y: float = 0, downsample: float = 1.0) -> None:
        if self._overlay is not None:
            self.scene().removeItem(self._overlay)
            self._overlay = None
        if image is not None:
            self._overlay = self.scene().addPixmap(QPixmap.fromImage(image))
            self._overlay.setPos(x, y)
            self._overlay.setScale(downsample)
            self._overlay.setZValue(5)

    @property
    def overlay(self) -> QGraphicsPixmapItem | None:
        return self._overlay

    # --- tiles --------------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._refresh.start()
        self.refresh_scale()
        self.view_changed.emit()

    def refresh_scale(self) -> None:
        """The scale bar for the slide's µm/px (given anew, or the view zoomed)."""
        mpp = self.slide.mpp if self.slide is not None else None
        self.scale_bar.show_scale(mpp[0] / self.scale_factor if mpp else None)

    def _request_tiles(self) -> None:
        if self.slide is None or self.loader is None:
            return
        level = self.slide.best_level_for_downsample(1.0 / max(self.scale_factor, 1e-9))
        if level != self.level:
            for item in self._tiles.values():
                self.scene().removeItem(item)
            self._tiles.clear()
            self.level = level
        ds = self.slide.level_downsamples[level]
        lw, lh = self.slide.level_dimensions[level]
        rect = self.visible_rect()
        cols = range(max(0, int(rect.left() / ds) // TILE), min(math.ceil(lw / TILE), int(rect.right() / ds) // TILE + 1))
        rows = range(max(0, int(rect.top() / ds) // TILE), min(math.ceil(lh / TILE), int(rect.bottom() / ds) // TILE + 1))
        for row in rows:
            for col in cols:
                key = TileKey(level, col, row)
                if key in self._tiles:
                    continue
                image = self.cache.get(key)
                if image is None:
                    self.loader.request(key)
                else:
                    self._show_tile(key, image)

    def _on_tile(self, key: TileKey, image: QImage) -> None:
        self.cache.put(key, image)
        if key.level == self.level and key not in self._tiles:
            self._show_tile(key, image)

    def _show_tile(self, key: TileKey, image: QImage) -> None:
        assert self.slide is not None
        ds = self.slide.level_downsamples[key.level]
        item = self.scene().addPixmap(QPixmap.fromImage(image))
        item.setPos(key.col * TILE * ds, key.row * TILE * ds)
        item.setScale(ds)
        item.setZValue(0)
        self._tiles[key] = item

    @property
    def shown_tiles(self) -> list[TileKey]:
        return list(self._tiles)

    # --- annotations (model -> items) -----------------------------------------------------------------------------
    def _on_annotations(self, what: str, annotation: Annotation) -> None:
        """Redraw the annotation; a region added, removed or given another role renumbers the regions' titles."""
        old = self._items.get(annotation.id)
        if what in ("removed", "changed") and old is not None:
            self.scene().removeItem(self._items.pop(annotation.id))
        if what in ("added", "changed"):
            self._add_item(annotation)
        if annotation.role.is_area or (old is not None and old.annotation.role.is_area):
            self._retitle()

    def _retitle(self) -> None:
        for key, title in self.annotations.region_titles().items():
            if key in self._items:
                self._items[key].set_title(title)

    def _add_item(self, annotation: Annotation) -> None:
        self._quiet = True  # removing a selected item deselects it: not a user's choice
        old = self._items.pop(annotation.id, None)
        if old is not None:
            self.scene().removeItem(old)
        limits = QRectF(0, 0, *self.slide.dimensions) if self.slide is not None else QRectF(-1e9, -1e9, 2e9, 2e9)
        item = AnnotationItem(annotation, limits)
        editable = self.tool is Tool.SELECT
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, editable)
        item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, editable)
        self.scene().addItem(item)
        self._items[annotation.id] = item
        self._show(item, annotation.id in self._selection)
        self._quiet = False

    def selected_annotations(self) -> list[Annotation]:
        return [self._items[i].annotation for i in self._selection if i in self._items]

    def select_ids(self, ids: tuple[str, ...] | list[str]) -> None:
        """Show the model's selection: highlighted in every tool, and Qt's selection too in the Select tool."""
        self._selection = set(ids)
        self._quiet = True
        for key, item in self._items.items():
            self._show(item, key in self._selection)
        self._quiet = False

    def _show(self, item: AnnotationItem, selected: bool) -> None:
        if item.highlighted != selected:
            item.highlighted = selected
            item.update()
        if self.tool is Tool.SELECT and item.isSelected() != selected:
            item.setSelected(selected)

    def _on_selection(self) -> None:
        """Qt's selection changed by a click or a rubber band (Select tool): tell the model."""
        if not self._quiet and self.tool is Tool.SELECT:
            picked = [i.annotation.id for i in self.scene().selectedItems() if isinstance(i, AnnotationItem)]
            self._selection = set(picked)
            self.selection_changed.emit(picked)

    def set_brush_size(self, pixels: int) -> None:
        pixels = int(np.clip(pixels, *BRUSH_SIZES))
        if pixels != self.brush_pixels:
            self.brush_pixels = pixels
            self.brush_changed.emit(pixels)

    # --- input ----------------------------------------------------------------------------------------------------
    def set_tool(self, tool: Tool) -> None:
        self.tool = tool
        self._cancel_drawing()
        pan = tool is Tool.PAN
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if pan else
                         QGraphicsView.DragMode.RubberBandDrag if tool is Tool.SELECT else QGraphicsView.DragMode.NoDrag)
        self._quiet = True  # Qt's selection follows the model's in the Select tool and is off in the others
        for key, item in self._items.items():
            item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, tool is Tool.SELECT)
            item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, tool is Tool.SELECT)
            if tool is Tool.SELECT:
                item.setSelected(key in self._selection)
        self._quiet = False

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        self.zoom_to(self.scale_factor * 1.25**steps, event.position())

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self._changed()

    def resizeEvent(self, event) -> None:  # noqa: ANN001
        super().resizeEvent(event)
        self._changed()

    def keyPressEvent(self, event) -> None:  # noqa: ANN001
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat() and self.tool is not Tool.PAN:
            self._space_pan = True
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.tool is Tool.POLYGON:
            self._finish_polygon()
        elif event.key() == Qt.Key.Key_Escape:
            self._cancel_drawing()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: ANN001
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat() and self._space_pan:
            self._space_pan = False
            self.set_tool(self.tool)
        else:
            super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._space_pan or self.tool in (Tool.PAN, Tool.SELECT) or event.button() != Qt.MouseButton.LeftButton:
            super().mousePressEvent(event)
            self._press_selection = {i: QPointF(i.pos()) for i in self.scene().selectedItems()}
            return
        point = self.mapToScene(event.position().toPoint())
        if self.tool is Tool.POLYGON:
            self._drawing.append(point)
        else:
            self._drawing = [point]
        self._update_preview(point)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        point = self.mapToScene(event.position().toPoint())
        self.cursor_moved.emit(point.x(), point.y())
        if self._drawing and self.tool in (Tool.BRUSH, Tool.ERASER):
            self._drawing.append(point)
        if self._drawing:
            self._update_preview(point)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        if self.tool is Tool.SELECT:
            pressed, self._press_selection = self._press_selection, {}
            for item, start in pressed.items():
                delta = item.pos() - start
                if isinstance(item, AnnotationItem) and (delta.x() or delta.y()):
                    self.moved.emit(item.annotation, delta.x(), delta.y())
            return
        if not self._drawing or self.tool is Tool.POLYGON:
            return
        point = self.mapToScene(event.position().toPoint())
        if self.tool is Tool.RECTANGLE:
            self._finish_rectangle(self._drawing[0], point)
        elif self.tool in (Tool.BRUSH, Tool.ERASER):
            self._finish_stroke()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.tool is Tool.POLYGON:
            self._finish_polygon()
        else:
            super().mouseDoubleClickEvent(event)

    # --- drawing ----------------------------------------------------------------------------------------------------
    def _finish_rectangle(self, a: QPointF, b: QPointF) -> None:
        x0, x1 = sorted((a.x(), b.x()))
        y0, y1 = sorted((a.y(), b.y()))
        self._cancel_drawing()
        if (x1 - x0) * self.scale_factor >= 3 and (y1 - y0) * self.scale_factor >= 3:
            self.shape_drawn.emit(Annotation.rectangle(round(x0), round(y0), round(x1 - x0), round(y1 - y0)))

    def _finish_polygon(self) -> None:
        points = [(p.x(), p.y()) for p in self._drawing]
        self._cancel_drawing()
        unique = list(dict.fromkeys(points))
        if len(unique) >= 3 and Polygon(unique).area > 0:
            self.shape_drawn.emit(Annotation(Polygon(unique), cls=self._label_class()))

    def _finish_stroke(self) -> None:
        radius = self.brush_pixels / 2 / self.scale_factor
        points = [(p.x(), p.y()) for p in self._drawing]
        self._cancel_drawing()
        stroke = (Point(points[0]) if len(set(points)) < 2 else LineString(points)).buffer(radius)
        if self.tool is Tool.ERASER:
            self.erased.emit(stroke)
        else:
            self.shape_drawn.emit(Annotation(shapely.simplify(stroke, radius / 8), cls=self._label_class(), kind=Kind.BRUSH))

    def _label_class(self) -> AnnotationClass:
        return self.current_class or TISSUE

    def _update_preview(self, point: QPointF) -> None:
        if self._preview is not None:
            self.scene().removeItem(self._preview)
        pen = QPen(QColor(255, 200, 0), 2)
        pen.setCosmetic(True)
        if self.tool is Tool.RECTANGLE:
            self._preview = self.scene().addRect(QRectF(self._drawing[0], point).normalized(), pen)
        else:
            path = QPainterPath(self._drawing[0])
            for p in self._drawing[1:] + ([point] if self.tool is Tool.POLYGON else []):
                path.lineTo(p)
            if self.tool in (Tool.BRUSH, Tool.ERASER):
                pen.setWidthF(self.brush_pixels)
                pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            self._preview = self.scene().addPath(path, pen)
        self._preview.setZValue(20)

    def _cancel_drawing(self) -> None:
        self._drawing = []
        if self._preview is not None:
            self.scene().removeItem(self._preview)
            self._preview = None
