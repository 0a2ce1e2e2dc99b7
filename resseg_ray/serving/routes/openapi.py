"""The request bodies of the routes that read their body themselves (images, GeoJSON, under
size limits and deadlines), described for the OpenAPI page."""

from typing import Any

__all__ = ["ANNOTATIONS", "IMAGE_REF", "PAIR_BODY", "REFINE", "body"]

IMAGE_REF: dict[str, Any] = {
    "type": "object",
    "description": "an s3:// GeoTIFF or STAC item under serve.allowed_prefixes, or an inline STAC item",
    "properties": {
        "uri": {"type": "string", "example": "s3://my-post-event-bucket/incoming/D12.tif"},
        "item": {"type": "object", "description": "a STAC item (GeoJSON Feature with assets)"},
        "asset": {"type": "string", "example": "visual"},
    },
}
PAIR_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["pre", "post"],
                    "properties": {"pre": IMAGE_REF, "post": IMAGE_REF},
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["pre", "post"],
                    "properties": {
                        "pre": {"type": "string", "format": "binary"},
                        "post": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}
"""``POST /v1/damage``'s body: the scenes before and after the event, as two images."""
ANNOTATIONS: dict[str, Any] = {
    "type": "object",
    "description": "GeoJSON FeatureCollection (EPSG:4326) of Polygons/MultiPolygons; properties.kind is "
    "'area' or 'building' (optional source: drawn or predicted, predicted_id, map, note)",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"type": "object"}},
    },
}
REFINE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "epochs": {
            "type": "integer",
            "minimum": 1,
            "description": "default: serve.refine_config's train.epochs",
        },
        "adapt_bn": {"type": "boolean", "default": False},
        "from": {
            "type": "string",
            "pattern": "^r[1-9][0-9]*$",
            "description": "refine this refinement's model",
        },
    },
    "additionalProperties": False,
}


def body(*kinds: str, json_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that reads its body itself: ``image`` (a GeoTIFF, raw
    or as a multipart file) and/or ``json`` (of ``json_schema``)."""
    content: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        if kind == "image":
            content["image/tiff"] = {"schema": {"type": "string", "format": "binary"}}
            content["multipart/form-data"] = {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            }
        elif kind == "json":
            content["application/json"] = {"schema": json_schema or {"type": "object"}}
    return {"requestBody": {"required": True, "content": content}}
