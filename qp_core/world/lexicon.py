"""The synthetic world's lexicon: every word a generated query can contain, with its class and label.

Why a hand-written lexicon: the ground truth must follow ``conf/rules/`` exactly, and the rules decide
entity type, term weight and category from the *class* of each word (entity type, topic word, qualifier,
intent word, slang, stop word). Composing queries from classified words makes every label derivable by
the same rules the prompt shows. Words carry ``first_day`` (day offset from the world's start) so slang,
trending IPs and new KOLs appear only from a later day, as on a real SNS.

The data is kept as compact text tables below (one word a line or a space-separated list) so that a
reader can review the world at a glance. Why this module is over ~400 lines: almost all of it is those
tables; the code that reads them is a few dozen lines, and splitting the words from their classes would make
the world harder to review, not easier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from qp_core.normalize import compact

ENTITY_KINDS = ("brand", "product_series", "product_type", "location", "poi", "person", "ip")
# non-entity word classes; see conf/rules/30_term_weights.md
TOPIC, QUAL, INTENT, EVAL, STOP, PUNCT = "topic", "qual", "intent", "eval", "stop", "punct"


@dataclass(frozen=True)
class Word:
    """One lexicon word. ``kind`` is an entity type or a non-entity class; ``label`` a taxonomy label or ""."""

    text: str
    kind: str
    label: str = ""
    first_day: int = 0
    slang: bool = False
    canonical: str = ""  # for brand aliases: the main brand name
    ptype: str = ""  # for series: the product type it belongs to
    home: str = ""  # for poi: its city

    @property
    def is_entity(self) -> bool:
        return self.kind in ENTITY_KINDS


@dataclass(frozen=True)
class Sense:
    kind: str  # entity type, or "topic"
    label: str
    also: tuple[str, ...] = ()  # further domains that point to this sense (苹果 + macbookair -> brand)

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.label, *self.also)


# Words whose meaning (entity type and category) depends on context: conf/rules/40_taxonomy.md.
# First sense = default sense.
AMBIGUOUS: dict[str, tuple[Sense, ...]] = {
    "苹果": (Sense("brand", "数码/手机", ("数码/电脑",)), Sense("product_type", "美食/食谱")),
    "小米": (Sense("brand", "数码/手机"), Sense("product_type", "美食/食谱")),
    "荣耀": (Sense("brand", "数码/手机"), Sense("ip", "游戏/手游")),
    "椰子": (Sense("product_series", "时尚/鞋靴箱包"), Sense("product_type", "美食/食谱")),
    "奶油风": (Sense(TOPIC, "家居/装修"), Sense(TOPIC, "时尚/穿搭")),
}

# brand|aliases|label[|first_day]   then indented: series|label|ptype[|first_day]
_BRANDS = """
雅诗兰黛|el,esteelauder|美妆/护肤
  小棕瓶|美妆/护肤|精华
  dw|美妆/彩妆|粉底液
  1c1|美妆/彩妆|粉底液
  2c0|美妆/彩妆|粉底液
兰蔻|lancome|美妆/护肤
  小黑瓶|美妆/护肤|精华
  菁纯|美妆/护肤|面霜
  196|美妆/彩妆|口红
迪奥|dior|美妆/彩妆
  999|美妆/彩妆|口红
  烈艳蓝金|美妆/彩妆|口红
  锁妆|美妆/彩妆|粉底液
圣罗兰|ysl|美妆/彩妆
  小金条|美妆/彩妆|口红
  方管|美妆/彩妆|口红
  皮气垫|美妆/彩妆|气垫
阿玛尼|armani|美妆/彩妆
  红管|美妆/彩妆|唇釉
  权力|美妆/彩妆|粉底液
  405|美妆/彩妆|唇釉
完美日记|perfectdiary|美妆/彩妆
  小细跟|美妆/彩妆|口红
花西子|florasis|美妆/彩妆
  空气蜜粉|美妆/彩妆|散粉
毛戈平|mgp|美妆/彩妆
  光感|美妆/彩妆|粉底液
魅可|mac|美妆/彩妆
  chili|美妆/彩妆|口红
橘朵|judydoll|美妆/彩妆
  高光|美妆/彩妆|眼影
修丽可|skinceuticals|美妆/护肤
  色修|美妆/护肤|精华
  ce|美妆/护肤|精华
珀莱雅|proya|美妆/护肤
  双抗|美妆/护肤|精华
  红宝石|美妆/护肤|面霜
薇诺娜|winona|美妆/护肤
  特护霜|美妆/护肤|面霜
理肤泉|larocheposay|美妆/护肤
  b5|美妆/护肤|面霜
海蓝之谜|lamer|美妆/护肤
  精华面霜|美妆/护肤|面霜
资生堂|shiseido|美妆/护肤
  红腰子|美妆/护肤|精华
skii|sk2|美妆/护肤
  神仙水|美妆/护肤|精华
欧莱雅|loreal|美妆/护肤
  紫熨斗|美妆/护肤|眼霜
优衣库|uniqlo|时尚/穿搭
  摇粒绒|时尚/穿搭|卫衣
zara||时尚/穿搭
始祖鸟|arcteryx|时尚/穿搭
  beta|时尚/穿搭|冲锋衣
  atom|时尚/穿搭|冲锋衣
北面|tnf|时尚/穿搭
  1996|时尚/穿搭|羽绒服
波司登|bosideng|时尚/穿搭
  登峰|时尚/穿搭|羽绒服
新百伦|nb,newbalance|时尚/鞋靴箱包
  990v6|时尚/鞋靴箱包|运动鞋
  574|时尚/鞋靴箱包|运动鞋
  530|时尚/鞋靴箱包|运动鞋
匡威|converse|时尚/鞋靴箱包
  1970s|时尚/鞋靴箱包|板鞋
耐克|nike|时尚/鞋靴箱包
  af1|时尚/鞋靴箱包|板鞋
  dunk|时尚/鞋靴箱包|板鞋
  aj1|时尚/鞋靴箱包|运动鞋
阿迪达斯|adidas|时尚/鞋靴箱包
  samba|时尚/鞋靴箱包|板鞋
  椰子|时尚/鞋靴箱包|运动鞋
李宁|lining|时尚/鞋靴箱包
  retro-x|时尚/鞋靴箱包|运动鞋
  赤兔|健身/运动|跑鞋
萨洛蒙|salomon|时尚/鞋靴箱包
  xt-6|时尚/鞋靴箱包|运动鞋
蔻驰|coach|时尚/鞋靴箱包
  tabby|时尚/鞋靴箱包|包包
珑骧|longchamp|时尚/鞋靴箱包
  饺子包|时尚/鞋靴箱包|包包
海底捞|haidilao|美食/探店
喜茶|heytea|美食/探店
  多肉葡萄|美食/探店|奶茶
瑞幸|luckin|美食/探店
  生椰拿铁|美食/探店|咖啡
星巴克|starbucks|美食/探店
霸王茶姬|chagee|美食/探店
  伯牙绝弦|美食/探店|奶茶
太二|taier|美食/探店
亚朵|atour|旅行/酒店民宿
全季|jihotel|旅行/酒店民宿
希尔顿|hilton|旅行/酒店民宿
苹果|apple|数码/手机
  iphone15|数码/手机|手机
  iphone15pro|数码/手机|手机
  airpods|数码/手机|耳机
  macbookair|数码/电脑|笔记本
  ipadpro|数码/电脑|平板
华为|huawei|数码/手机
  mate60|数码/手机|手机
  pura70|数码/手机|手机
  matebook|数码/电脑|笔记本
小米|xiaomi|数码/手机
  14ultra|数码/手机|手机
  红米k70|数码/手机|手机
荣耀|honor|数码/手机
  magic6|数码/手机|手机
oppo||数码/手机
  findx7|数码/手机|手机
  reno11|数码/手机|手机
vivo||数码/手机
  x100|数码/手机|手机
一加|oneplus|数码/手机
  ace3|数码/手机|手机
三星|samsung|数码/手机
  s24|数码/手机|手机
联想|lenovo|数码/电脑
  拯救者|数码/电脑|笔记本
  小新|数码/电脑|笔记本
戴尔|dell|数码/电脑
  xps|数码/电脑|笔记本
华硕|asus|数码/电脑
  天选|数码/电脑|笔记本
宜家|ikea|家居/装修
  毕利|家居/装修|书架
无印良品|muji|家居/装修
源氏木语||家居/装修
林氏家居||家居/装修
飞鹤|feihe|母婴/育儿
  星飞帆|母婴/育儿|奶粉
爱他美|aptamil|母婴/育儿
帮宝适|pampers|母婴/育儿
  一级帮|母婴/育儿|纸尿裤
花王|merries|母婴/育儿
迪卡侬|decathlon|健身/运动
lululemon|露露|健身/运动
  align|健身/运动|瑜伽裤
keep||健身/运动
皇家|royalcanin|宠物/猫狗
渴望|orijen|宠物/猫狗
麦富迪|myfoodie|宠物/猫狗
"""

# label: product types (菜品、食材、饮品、动物品种 count as product_type)
_PTYPES = {
    "美妆/彩妆": "粉底液 口红 气垫 眼影 腮红 散粉 遮瑕 唇釉 眉笔 睫毛膏",
    "美妆/护肤": "精华 面霜 防晒 水乳 面膜 洗面奶 眼霜 卸妆油",
    "时尚/穿搭": "冲锋衣 羽绒服 卫衣 牛仔裤 大衣 针织衫 连衣裙 衬衫 阔腿裤",
    "时尚/鞋靴箱包": "包包 板鞋 运动鞋 老爹鞋 托特包 斜挎包 马丁靴 雪地靴",
    "美食/探店": "火锅 奶茶 咖啡 烤肉 日料 烧烤 早茶 自助餐 小吃 甜品",
    "美食/食谱": "红烧肉 减脂餐 可乐鸡翅 番茄炒蛋 便当 面包 糖醋排骨 空气炸锅 苹果 小米 椰子",
    "数码/手机": "手机 耳机 充电宝 手机壳",
    "数码/电脑": "笔记本 平板 键盘 显示器 电脑",
    "家居/装修": "沙发 床垫 窗帘 地板 瓷砖 书架 餐桌 衣柜",
    "母婴/育儿": "奶粉 纸尿裤 婴儿车 安抚奶嘴 儿童座椅",
    "健身/运动": "跑鞋 瑜伽垫 哑铃 运动内衣 筋膜枪 瑜伽裤",
    "宠物/猫狗": "猫粮 狗粮 猫砂 猫爬架 布偶猫 柯基 金毛 英短 冻干",
}

# label: topic words (主题词); "word@N" = slang first seen on day N ("word@0" = slang from day 0)
_TOPICS = {
    "美妆/彩妆": "妆容 底妆 色号 仿妆 早八妆@2 伪素颜@0",
    "美妆/护肤": "护肤步骤 早c晚a@0 刷酸",
    "时尚/穿搭": "穿搭 搭配 老钱风@1 美拉德@1 多巴胺@0 静奢风@3 松弛感@4 奶油风",
    "时尚/鞋靴箱包": "配饰 鞋包",
    "美食/探店": "探店 必吃 美食",
    "美食/食谱": "食谱 做法 家常菜 烘焙",
    "旅行/目的地": "旅游 景点 路线 自驾 一日游 citywalk@0 特种兵@1",
    "旅行/酒店民宿": "酒店 民宿 住宿",
    "数码/手机": "换机 参数",
    "数码/电脑": "装机 配置",
    "游戏/手游": "抽卡 阵容 配队 出装 角色",
    "娱乐/明星": "综艺 演唱会 路透 剧照",
    "家居/装修": "装修 软装 收纳 改造 侘寂风@2 中古风 奶油风",
    "母婴/育儿": "辅食 育儿 早教 待产包 月子",
    "健身/运动": "减脂 健身 瑜伽 跑步 普拉提 增肌 居家锻炼",
    "宠物/猫狗": "遛狗 养猫 驱虫 绝育",
}

# label ("" = any domain): qualifiers (修饰词), weight 1, no label
_QUALS = {
    "": "平价 学生党 新款 2024 男生 女生 小众 高级感 新手 性价比",
    "美妆/彩妆": "干皮 油皮 黄黑皮 持妆 显白 秋冬 夏天",
    "美妆/护肤": "干皮 油皮 敏感肌 抗老 美白 夏天",
    "时尚/穿搭": "小个子 微胖 梨形身材 通勤 约会 显瘦 秋冬 冬季",
    "时尚/鞋靴箱包": "百搭 小众 通勤 显高",
    "美食/探店": "人均50 本地人 网红 排队",
    "美食/食谱": "低卡 快手 一人食 懒人",
    "旅行/目的地": "五一 国庆 周末 亲子 人少 三天两晚",
    "旅行/酒店民宿": "亲子 海景 性价比 周末",
    "数码/手机": "续航 拍照 发热 二手",
    "数码/电脑": "大学生 办公 剪辑 轻薄",
    "游戏/手游": "新手 零氪 平民",
    "娱乐/明星": "同框 最新",
    "家居/装修": "小户型 出租屋 北欧",
    "母婴/育儿": "新生儿 6个月 宝宝 一岁",
    "健身/运动": "初学者 30天 居家 暴汗",
    "宠物/猫狗": "幼猫 幼犬 老年犬",
}

# intent words (意图词): text -> need template (conf/rules/50_intent.md)
INTENTS: dict[str, str] = {
    "推荐": "找{o}的推荐",
    "测评": "看{o}的测评",
    "怎么样": "了解{o}的口碑",
    "值不值得": "了解{o}的口碑",
    "哪个好": "比较{o}怎么选",
    "怎么选": "比较{o}怎么选",
    "对比": "比较{o}怎么选",
    "多少钱": "了解{o}的价格",
    "价格": "了解{o}的价格",
    "攻略": "找{o}的攻略",
    "教程": "学{o}的教程",
    "平替": "找{o}的平价替代",
    "避雷": "避开{o}的雷区",
    "同款": "找{o}的同款",
    "合集": "看{o}的合集",
}
DEFAULT_NEED = "了解{o}的相关内容"
# which intents fit which domains ("" = any)
_INTENT_FIT = {
    "": "推荐 测评 怎么样 值不值得 哪个好 怎么选 对比 多少钱 价格 平替 避雷 合集",
    "travel_game": "攻略",
    "howto": "教程",
    "celeb": "同款",
}

# evaluative slang (评价类流行语), weight 1, no label: "word@first_day"
_EVAL = "yyds@0 绝绝子@0 出片@0 宝藏@0 天花板@0 泰酷辣@1 闭眼入@2 封神@3 显眼包@5"
_STOPS = "的 吗 呀 啊 求 有没有 什么 哪些 一下"
_PUNCTS = "? ! ~ 💄 ✨ 🔥"

# location / poi (poi: text|city|label)
_LOCATIONS = "上海 北京 成都 重庆 杭州 大理 三亚 云南 西安 长沙 厦门 日本 泰国 新疆 青岛 广州 哈尔滨 淄博"
_POIS = """
迪士尼|上海|旅行/目的地
外滩|上海|旅行/目的地
武康路|上海|旅行/目的地
环球影城|北京|旅行/目的地
故宫|北京|旅行/目的地
太古里|成都|旅行/目的地
洪崖洞|重庆|旅行/目的地
西湖|杭州|旅行/目的地
洱海|大理|旅行/目的地
鼓浪屿|厦门|旅行/目的地
兵马俑|西安|旅行/目的地
冰雪大世界|哈尔滨|旅行/目的地
八大关|青岛|旅行/目的地
文和友|长沙|美食/探店
建设巷|成都|美食/探店
"""

# person|label|first_day  (明星 -> 娱乐/明星; KOL -> their domain)
_PERSONS = """
刘亦菲|娱乐/明星|0
王一博|娱乐/明星|0
赵露思|娱乐/明星|0
肖战|娱乐/明星|0
杨幂|娱乐/明星|0
白鹿|娱乐/明星|0
虞书欣|娱乐/明星|0
王鹤棣|娱乐/明星|0
丁禹兮|娱乐/明星|3
李佳琦|美妆/彩妆|0
程十安|美妆/彩妆|0
深夜徐老师|美妆/彩妆|0
骆王宇|美妆/护肤|0
帕梅拉|健身/运动|0
刘畊宏|健身/运动|0
"""

# ip|label|first_day
_IPS = """
原神|游戏/手游|0
王者荣耀|游戏/手游|0
星铁|游戏/手游|0
蛋仔派对|游戏/手游|0
恋与深空|游戏/手游|1
光遇|游戏/手游|0
和平精英|游戏/手游|0
第五人格|游戏/手游|0
金铲铲|游戏/手游|0
鸣潮|游戏/手游|2
荣耀|游戏/手游|0
繁花|娱乐/明星|0
庆余年|娱乐/明星|0
长相思|娱乐/明星|0
哈利波特|娱乐/明星|0
"""


@dataclass
class Lexicon:
    """All words, indexed the ways the composer needs them."""

    brands: list[Word] = field(default_factory=list)  # canonical names
    aliases: dict[str, list[Word]] = field(default_factory=dict)  # canonical -> alias words
    series: dict[str, list[Word]] = field(default_factory=dict)  # canonical brand -> series
    ptypes: dict[str, list[Word]] = field(default_factory=dict)  # label -> product types
    topics: dict[str, list[Word]] = field(default_factory=dict)  # label -> topic words
    quals: dict[str, list[Word]] = field(default_factory=dict)  # label ("" generic) -> qualifiers
    intents: dict[str, list[Word]] = field(default_factory=dict)  # fit group -> intents
    evals: list[Word] = field(default_factory=list)
    stops: list[Word] = field(default_factory=list)
    puncts: list[Word] = field(default_factory=list)
    locations: list[Word] = field(default_factory=list)
    pois: list[Word] = field(default_factory=list)
    persons: list[Word] = field(default_factory=list)
    ips: list[Word] = field(default_factory=list)
    # per-lexicon cache of the composer's domain packs (a drifted lexicon has its own)
    packs_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def all_words(self) -> list[Word]:
        out = list(self.brands)
        for group in (self.aliases, self.series, self.ptypes, self.topics, self.quals, self.intents):
            for ws in group.values():
                out.extend(ws)
        out += self.evals + self.stops + self.puncts + self.locations + self.pois + self.persons + self.ips
        return out

    def slang(self) -> list[Word]:
        """Words that appear only from a later day (slang, trending IPs/people) or are SNS slang."""
        seen: dict[str, Word] = {}
        for w in self.all_words():
            if w.slang or w.first_day > 0:
                seen.setdefault(w.text, w)
        return list(seen.values())


def _day_split(token: str) -> tuple[str, int, bool]:
    if "@" in token:
        text, day = token.split("@")
        return text, int(day), True
    return token, 0, False


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    lex = Lexicon()
    current = ""
    for line in _BRANDS.strip("\n").splitlines():
        if not line.strip():
            continue
        if line.startswith("  "):
            parts = line.strip().split("|")
            first = int(parts[3]) if len(parts) > 3 else 0
            lex.series[current].append(Word(parts[0], "product_series", parts[1], first, ptype=parts[2]))
            continue
        parts = line.split("|")
        current, label = parts[0], parts[2]
        first = int(parts[3]) if len(parts) > 3 else 0
        lex.brands.append(Word(current, "brand", label, first, canonical=current))
        lex.aliases[current] = [Word(a, "brand", label, first, canonical=current) for a in parts[1].split(",") if a]
        lex.series[current] = []
    for label, words in _PTYPES.items():
        lex.ptypes[label] = [Word(w, "product_type", label) for w in words.split()]
    for label, words in _TOPICS.items():
        lex.topics[label] = [Word(t, TOPIC, label, d, s) for t, d, s in map(_day_split, words.split())]
    for label, words in _QUALS.items():
        lex.quals[label] = [Word(w, QUAL) for w in words.split()]
    for group, words in _INTENT_FIT.items():
        lex.intents[group] = [Word(w, INTENT) for w in words.split()]
    lex.evals = [Word(t, EVAL, "", d, True) for t, d, _ in map(_day_split, _EVAL.split())]
    lex.stops = [Word(w, STOP) for w in _STOPS.split()]
    lex.puncts = [Word(w, PUNCT) for w in _PUNCTS.split()]
    lex.locations = [Word(w, "location", "旅行/目的地") for w in _LOCATIONS.split()]
    for line in _POIS.strip().splitlines():
        text, city, label = line.split("|")
        lex.pois.append(Word(text, "poi", label, home=city))
    for line in _PERSONS.strip().splitlines():
        text, label, day = line.split("|")
        lex.persons.append(Word(text, "person", label, int(day), slang=False))
    for line in _IPS.strip().splitlines():
        text, label, day = line.split("|")
        lex.ips.append(Word(text, "ip", label, int(day)))
    return lex


def lexicon_problems(lex: Lexicon | None = None) -> list[str]:
    """Consistency checks the ground truth relies on (run by the tests).

    * every word is already normalised and whitespace-free (labels are written over the normalised query);
    * a text has one (class, label) everywhere unless it is a listed ambiguous word — otherwise the rules
      could not decide its labels from the text alone.
    """
    lex = lex or lexicon()
    problems: list[str] = []
    seen: dict[str, tuple[str, str]] = {}
    for w in lex.all_words():
        if compact(w.text) != w.text:
            problems.append(f"{w.text!r} is not normalised/compact")
        if w.text in AMBIGUOUS:
            continue
        key = (w.kind, w.label if w.kind not in (QUAL, INTENT, EVAL, STOP, PUNCT) else "")
        if w.text in seen and seen[w.text] != key:
            problems.append(f"{w.text!r} has two meanings {seen[w.text]} and {key} but is not in AMBIGUOUS")
        seen.setdefault(w.text, key)
    return problems


def lookup(text: str) -> Word:
    """The lexicon word with this text (an ambiguous word comes back in its default sense)."""
    if text in AMBIGUOUS:
        sense = AMBIGUOUS[text][0]
        return Word(text, sense.kind, sense.label)
    for w in lexicon().all_words():
        if w.text == text:
            return w
    raise KeyError(text)
