"""A small multilingual retrieval set written for the tests: five questions and the passage that answers each,
in nine languages. Used on the trained model (tests/test_trained_model.py) and by the retrieval-roles
measurement (benchmarks/retrieval_roles.py)."""

# Five questions and the passage that answers each, in nine languages: passage i answers query i.
TOPICS = {
    "en": (
        ["How much protein should a woman eat per day?", "How tall is the Eiffel Tower?",
         "How do plants make their food?", "How do I cook pumpkin?", "What causes earthquakes?"],
        ["Women need about 46 grams of protein a day, more when pregnant or training for a marathon.",
         "The Eiffel Tower in Paris is 330 metres tall and was completed in 1889.",
         "Through photosynthesis, plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
         "Peel the pumpkin, cut it into thin strips and stir-fry it for two minutes in hot oil with garlic and salt.",
         "Earthquakes happen when tectonic plates sliding past each other suddenly slip and release energy."],
    ),
    "de": (
        ["Wie viel Eiweiß sollte eine Frau pro Tag essen?", "Wie hoch ist der Eiffelturm?",
         "Wie stellen Pflanzen ihre Nahrung her?", "Wie koche ich Kürbis?", "Was verursacht Erdbeben?"],
        ["Frauen brauchen etwa 46 Gramm Eiweiß am Tag, in der Schwangerschaft oder beim Marathontraining mehr.",
         "Der Eiffelturm in Paris ist 330 Meter hoch und wurde 1889 fertiggestellt.",
         "Durch Photosynthese verwandeln Pflanzen Sonnenlicht, Wasser und Kohlendioxid in Zucker und Sauerstoff.",
         "Den Kürbis schälen, in dünne Streifen schneiden und zwei Minuten mit Knoblauch und Salz in heißem Öl anbraten.",
         "Erdbeben entstehen, wenn aneinander vorbeigleitende tektonische Platten plötzlich rutschen und Energie freisetzen."],
    ),
    "fr": (
        ["Combien de protéines une femme doit-elle manger par jour ?", "Quelle est la hauteur de la tour Eiffel ?",
         "Comment les plantes fabriquent-elles leur nourriture ?", "Comment cuisiner le potiron ?",
         "Quelle est la cause des tremblements de terre ?"],
        ["Les femmes ont besoin d'environ 46 grammes de protéines par jour, davantage pendant la grossesse ou "
         "l'entraînement pour un marathon.",
         "La tour Eiffel, à Paris, mesure 330 mètres et a été achevée en 1889.",
         "Grâce à la photosynthèse, les plantes transforment la lumière du soleil, l'eau et le dioxyde de carbone "
         "en sucre et en oxygène.",
         "Épluchez le potiron, coupez-le en fines lamelles et faites-le sauter deux minutes dans l'huile chaude "
         "avec de l'ail et du sel.",
         "Les séismes se produisent lorsque des plaques tectoniques qui glissent l'une contre l'autre se déplacent "
         "brusquement et libèrent de l'énergie."],
    ),
    "es": (
        ["¿Cuánta proteína debe comer una mujer al día?", "¿Cuánto mide la torre Eiffel?",
         "¿Cómo producen las plantas su alimento?", "¿Cómo se cocina la calabaza?", "¿Qué causa los terremotos?"],
        ["Las mujeres necesitan unos 46 gramos de proteína al día, y más durante el embarazo o al entrenar para un maratón.",
         "La torre Eiffel de París mide 330 metros y se terminó en 1889.",
         "Mediante la fotosíntesis, las plantas convierten la luz solar, el agua y el dióxido de carbono en azúcar y oxígeno.",
         "Pela la calabaza, córtala en tiras finas y saltéala dos minutos en aceite caliente con ajo y sal.",
         "Los terremotos ocurren cuando las placas tectónicas que se deslizan unas junto a otras se mueven de golpe "
         "y liberan energía."],
    ),
    "ru": (
        ["Сколько белка должна съедать женщина в день?", "Какова высота Эйфелевой башни?",
         "Как растения производят себе пищу?", "Как приготовить тыкву?", "Почему происходят землетрясения?"],
        ["Женщинам нужно около 46 граммов белка в день, а во время беременности или подготовки к марафону — больше.",
         "Высота Эйфелевой башни в Париже — 330 метров, её строительство завершили в 1889 году.",
         "С помощью фотосинтеза растения превращают солнечный свет, воду и углекислый газ в сахар и кислород.",
         "Очистите тыкву, нарежьте тонкой соломкой и обжарьте две минуты в горячем масле с чесноком и солью.",
         "Землетрясения происходят, когда тектонические плиты, скользящие друг относительно друга, внезапно "
         "смещаются и высвобождают энергию."],
    ),
    "zh": (
        ["女性每天应该摄入多少蛋白质？", "埃菲尔铁塔有多高？", "植物是如何制造养分的？", "南瓜怎么做？", "地震是怎么引起的？"],
        ["女性每天大约需要46克蛋白质，怀孕或进行马拉松训练时需要更多。",
         "巴黎的埃菲尔铁塔高330米，于1889年建成。",
         "通过光合作用，植物把阳光、水和二氧化碳转化为糖和氧气。",
         "南瓜去皮，切成细丝，放入热油中加蒜和盐快速翻炒两分钟。",
         "当相互滑动的构造板块突然错动并释放能量时，就会发生地震。"],
    ),
    "ja": (
        ["女性は1日にどれくらいのタンパク質をとるべきですか？", "エッフェル塔の高さはどれくらいですか？",
         "植物はどうやって栄養を作るのですか？", "かぼちゃはどうやって調理しますか？", "地震はなぜ起こるのですか？"],
        ["女性には1日に約46グラムのタンパク質が必要で、妊娠中やマラソンのトレーニング中はさらに多く必要です。",
         "パリのエッフェル塔は高さ330メートルで、1889年に完成しました。",
         "植物は光合成によって、太陽の光と水と二酸化炭素から糖と酸素を作ります。",
         "かぼちゃの皮をむいて細切りにし、熱した油でにんにくと塩と一緒に2分間炒めます。",
         "地震は、すれ違うように動くプレートが急にずれてエネルギーを放出するときに起こります。"],
    ),
    "ar": (
        ["كم يجب أن تأكل المرأة من البروتين يوميًا؟", "كم يبلغ ارتفاع برج إيفل؟", "كيف تصنع النباتات غذاءها؟",
         "كيف أطبخ اليقطين؟", "ما سبب حدوث الزلازل؟"],
        ["تحتاج النساء إلى نحو 46 غرامًا من البروتين يوميًا، وإلى أكثر من ذلك أثناء الحمل أو التدريب على الماراثون.",
         "يبلغ ارتفاع برج إيفل في باريس 330 مترًا، وقد اكتمل بناؤه عام 1889.",
         "من خلال عملية التمثيل الضوئي تحوّل النباتات ضوء الشمس والماء وثاني أكسيد الكربون إلى سكر وأكسجين.",
         "قشّر اليقطين وقطّعه إلى شرائح رفيعة، ثم قلّبه في زيت ساخن مع الثوم والملح لمدة دقيقتين.",
         "تحدث الزلازل عندما تنزلق الصفائح التكتونية المتجاورة فجأة وتطلق طاقة."],
    ),
    "hi": (
        ["एक महिला को रोज़ कितना प्रोटीन खाना चाहिए?", "एफ़िल टॉवर कितना ऊँचा है?", "पौधे अपना भोजन कैसे बनाते हैं?",
         "कद्दू कैसे पकाएँ?", "भूकंप क्यों आते हैं?"],
        ["महिलाओं को रोज़ लगभग 46 ग्राम प्रोटीन की ज़रूरत होती है, गर्भावस्था में या मैराथन की तैयारी के दौरान इससे ज़्यादा।",
         "पेरिस का एफ़िल टॉवर 330 मीटर ऊँचा है और 1889 में बनकर तैयार हुआ था।",
         "प्रकाश संश्लेषण के ज़रिए पौधे धूप, पानी और कार्बन डाइऑक्साइड को शक्कर और ऑक्सीजन में बदलते हैं।",
         "कद्दू को छीलकर पतली पट्टियों में काटें और गरम तेल में लहसुन और नमक के साथ दो मिनट तक भूनें।",
         "भूकंप तब आते हैं जब एक-दूसरे के पास खिसकती टेक्टोनिक प्लेटें अचानक सरकती हैं और ऊर्जा छोड़ती हैं।"],
    ),
}
