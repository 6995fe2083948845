"""Fixed vocabularies of the demo data: clinics, cities, treatments, tags."""

from __future__ import annotations

from vault.value_sets import TreatmentCategory

TC = TreatmentCategory

# clinic id -> (city, resident-ID area code of a district there)
CLINICS: dict[str, tuple[str, str]] = {
    "sh-001": ("上海", "310101"),
    "sh-002": ("上海", "310104"),
    "bj-001": ("北京", "110105"),
    "sz-001": ("深圳", "440305"),
    "hz-001": ("杭州", "330106"),
    "cd-001": ("成都", "510104"),
}

MOBILE_PREFIXES = ("135", "136", "137", "138", "139", "150", "151", "158", "159", "186", "187", "188", "189", "199")

# category -> [(procedure, product, dose, body area)]
TREATMENTS: dict[TC, list[tuple[str, str, str, str]]] = {
    TC.injectable: [
        ("玻尿酸填充", "乔雅登 Voluma", "1.0 ml", "苹果肌"),
        ("肉毒素除皱", "保妥适 Botox", "20 U", "额头"),
        ("玻尿酸丰唇", "瑞蓝 Kysse", "0.8 ml", "唇部"),
    ],
    TC.laser: [
        ("皮秒激光祛斑", "PicoSure 755nm", "2.5 J/cm2", "面部"),
        ("光子嫩肤", "M22 IPL", "15 J/cm2", "全脸"),
    ],
    TC.skin_care: [
        ("水光针", "润致 娃娃针", "2.5 ml", "全脸"),
        ("果酸焕肤", "芯丝翠 20%", "1 层", "面部"),
    ],
    TC.body_contouring: [("冷冻溶脂", "CoolSculpting", "45 分钟", "腹部")],
    TC.hair_removal: [("激光脱毛", "LightSheer 808nm", "30 J/cm2", "腋下")],
    TC.thread_lift: [("线雕提升", "PPDO 埋线", "10 根", "下颌线")],
    TC.consultation: [("面诊评估", "—", "—", "面部")],
}

NOTES = (
    "术前沟通充分，患者知情同意。术后冰敷20分钟，无明显红肿。",
    "局部轻微红斑，已告知注意防晒，一周内避免剧烈运动。",
    "治疗过程顺利，患者耐受良好，建议四周后复诊。",
    "既往无过敏史，本次治疗后观察30分钟无不适。",
)
ADVERSE = ("轻微淤青，3日内消退", "注射点轻度肿胀", "")
ALLERGIES = ("青霉素", "利多卡因", "花粉", "海鲜", "乳胶")
CONTRAINDICATIONS = ("瘢痕体质", "凝血功能障碍", "近期服用阿司匹林", "活动性皮肤感染")
HISTORY = ("高血压，规律服药", "无特殊病史", "甲状腺功能减退", "曾行双眼皮手术")
INTEREST_TAGS = ("抗衰", "美白", "祛痘", "紧致", "补水", "塑形", "祛斑", "脱毛")
