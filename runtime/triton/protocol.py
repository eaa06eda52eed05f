"""The wire protocol of the ``rmpsam`` composition model (shared by repository, server models and client).

Every request carries all four inputs (so Triton's dynamic batcher may combine requests of equal shapes); the
leading 1 is Triton's batch dimension:

    TASK      int32  [1, 1]        ENCODE, PROMPTS, OBJECTS or SPEC
    FRAME_ID  uint64 [1, 1]        chosen by the client per frame; prompts on the same frame reuse its features
    IMAGE     uint8  [1, H, W, 3]  RGB frame, any size (ENCODE); [1, 0, 0, 3] otherwise
    BOXES     f32    [1, N, 4]     normalised (cx, cy, w, h) prompts (PROMPTS); [1, 0, 4] otherwise

Outputs per task (the client asks for exactly these):
    ENCODE   META int32 [1, 6] (ori h, w, resized h, w, padded h, w)
    PROMPTS  MASK_LOGITS f32 [1, N, h, w], IOU f32 [1, N]
    OBJECTS  CLASS_LOGITS f32 [1, Q, K+1], OBJ_MASK_LOGITS f32 [1, Q, h, w], QUERY_EMBED f32 [1, Q, C]
    SPEC     MANIFEST bytes [1, 1] (manifest.json), CLASS_EMBED f32 [1, K, P, 768] (K = 0: no vocabulary)
Features (16 MB per frame at 512 px) stay in the server's bounded frame cache.
"""
ENCODE, PROMPTS, OBJECTS, SPEC = 0, 1, 2, 3
COMPOSER = "rmpsam"
GRAPH_MODELS = ("encoder", "prompt_decoder", "object_decoder")
INPUTS = ("TASK", "FRAME_ID", "IMAGE", "BOXES")
OUTPUTS = {ENCODE: ("META",), PROMPTS: ("MASK_LOGITS", "IOU"),
           OBJECTS: ("CLASS_LOGITS", "OBJ_MASK_LOGITS", "QUERY_EMBED"), SPEC: ("MANIFEST", "CLASS_EMBED")}
UNKNOWN_FRAME = "unknown frame"  # error text when a frame id is not (or no longer) cached
