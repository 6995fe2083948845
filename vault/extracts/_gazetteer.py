"""The gazetteer behind the ``region`` hierarchy: city → province → region.

A member's city is free text in the data map, so an extract never releases it
as written: only a city named here is released (as its key below), anything
else becomes ``other``. The list covers the four municipalities, every
provincial capital, Hong Kong and Macau, and the largest prefecture-level
cities (about 110 in all). Keys are normalized names: no whitespace and no
trailing ``市`` (``hierarchies.city_label`` normalizes input the same way).

Regions are the seven geographic divisions: 华北, 东北, 华东, 华中, 华南,
西南, 西北.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# province -> (region, cities in that province)
_PROVINCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "北京市": ("华北", ("北京",)),
    "天津市": ("华北", ("天津",)),
    "河北省": ("华北", ("石家庄", "唐山", "保定", "邯郸", "廊坊", "沧州", "秦皇岛", "邢台")),
    "山西省": ("华北", ("太原", "大同")),
    "内蒙古自治区": ("华北", ("呼和浩特", "包头", "鄂尔多斯")),
    "辽宁省": ("东北", ("沈阳", "大连", "鞍山")),
    "吉林省": ("东北", ("长春", "吉林")),
    "黑龙江省": ("东北", ("哈尔滨", "大庆", "齐齐哈尔")),
    "上海市": ("华东", ("上海",)),
    "江苏省": ("华东", ("南京", "苏州", "无锡", "常州", "南通", "徐州", "扬州", "盐城", "泰州", "镇江", "淮安", "连云港")),
    "浙江省": ("华东", ("杭州", "宁波", "温州", "绍兴", "嘉兴", "台州", "金华", "湖州")),
    "安徽省": ("华东", ("合肥", "芜湖", "阜阳")),
    "福建省": ("华东", ("福州", "厦门", "泉州", "漳州")),
    "江西省": ("华东", ("南昌", "赣州", "九江")),
    "山东省": ("华东", ("济南", "青岛", "烟台", "潍坊", "临沂", "淄博", "济宁", "威海")),
    "河南省": ("华中", ("郑州", "洛阳", "南阳", "商丘", "周口", "新乡")),
    "湖北省": ("华中", ("武汉", "宜昌", "襄阳")),
    "湖南省": ("华中", ("长沙", "株洲", "衡阳", "岳阳", "常德")),
    "广东省": ("华南", ("广州", "深圳", "东莞", "佛山", "珠海", "中山", "惠州", "江门", "汕头", "湛江", "茂名", "揭阳")),
    "广西壮族自治区": ("华南", ("南宁", "柳州", "桂林")),
    "海南省": ("华南", ("海口", "三亚")),
    "香港特别行政区": ("华南", ("香港",)),
    "澳门特别行政区": ("华南", ("澳门",)),
    "重庆市": ("西南", ("重庆",)),
    "四川省": ("西南", ("成都", "绵阳", "南充", "宜宾")),
    "贵州省": ("西南", ("贵阳", "遵义")),
    "云南省": ("西南", ("昆明", "曲靖")),
    "西藏自治区": ("西南", ("拉萨",)),
    "陕西省": ("西北", ("西安", "榆林", "咸阳")),
    "甘肃省": ("西北", ("兰州",)),
    "青海省": ("西北", ("西宁",)),
    "宁夏回族自治区": ("西北", ("银川",)),
    "新疆维吾尔自治区": ("西北", ("乌鲁木齐",)),
}

REGIONS: tuple[str, ...] = ("华北", "东北", "华东", "华中", "华南", "西南", "西北")

PROVINCE_REGION: Mapping[str, str] = MappingProxyType({province: region for province, (region, _) in _PROVINCES.items()})

CITY_PROVINCE: Mapping[str, str] = MappingProxyType({city: province for province, (_, cities) in _PROVINCES.items() for city in cities})


def _check() -> None:
    count = sum(len(cities) for _, cities in _PROVINCES.values())
    if len(CITY_PROVINCE) != count:
        raise AssertionError("gazetteer: a city is listed twice")
    for city in CITY_PROVINCE:
        if not city or city.endswith("市") or city != "".join(city.split()):
            raise AssertionError("gazetteer: a city key is not normalized")
    if not set(PROVINCE_REGION.values()) <= set(REGIONS):
        raise AssertionError("gazetteer: unknown region")


_check()

__all__ = ["CITY_PROVINCE", "PROVINCE_REGION", "REGIONS"]
