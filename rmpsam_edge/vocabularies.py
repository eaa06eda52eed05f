"""Class names of the official vocabularies, recognised by their size when no names file is given.

COCO panoptic (K=133: 80 things, then 53 stuff; first synonym of each class of the official
``CocoPanopticOVDataset``) and YouTube-VIS 2019 (K=40, all things), in the order of the official embedding files.
"""

COCO_PANOPTIC = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange fruit', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'tv remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissor',
    'teddy bear', 'hair drier', 'toothbrush', 'banner', 'blanket', 'bridge', 'cardboard', 'counter', 'curtain',
    'door', 'wood floor', 'flower', 'fruit', 'gravel', 'house', 'lamp', 'mirror', 'tennis net', 'pillow',
    'platform', 'playingfield', 'railroad', 'river', 'road', 'roof', 'sand', 'sea', 'shelf', 'snow', 'stairs',
    'tent', 'towel', 'brick wall', 'stone wall', 'tile wall', 'wood wall', 'water', 'window blind', 'window',
    'tree', 'fence', 'ceiling', 'sky', 'cabinet', 'table', 'floor', 'pavement', 'mountain', 'grass', 'dirt',
    'paper', 'food', 'building', 'rock', 'wall', 'rug',
)

YOUTUBE_VIS_2019 = (
    'person', 'giant_panda', 'lizard', 'parrot', 'skateboard', 'sedan', 'ape', 'dog', 'snake', 'monkey', 'hand',
    'rabbit', 'duck', 'cat', 'cow', 'fish', 'train', 'horse', 'turtle', 'bear', 'motorbike', 'giraffe', 'leopard',
    'fox', 'deer', 'owl', 'surfboard', 'airplane', 'truck', 'zebra', 'tiger', 'elephant', 'snowboard', 'boat',
    'shark', 'mouse', 'frog', 'eagle', 'earless_seal', 'tennis_racket',
)

# K -> (names, number of thing classes)
KNOWN = {133: (COCO_PANOPTIC, 80), 40: (YOUTUBE_VIS_2019, 40)}
