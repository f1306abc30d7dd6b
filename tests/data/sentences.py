"""Sentences the test build speaks with espeak-ng: everyday dictation, eight per product language.

Written out in words (no digits, no abbreviations) so that the reference text is what the voice says.
Changing anything here changes the build's input hash: the synthetic clips are rebuilt on the next
`python -m tests.data.build`.
"""

# Product language code -> espeak-ng voice. Mandarin uses "cmn-latn-pinyin": espeak-ng 1.51's plain
# "cmn" voice (Debian 12) turns characters into pinyin with tone digits and then, reading Latin text
# as English, says "ni three hao three"; the pinyin variant speaks the same characters correctly.
VOICES: dict[str, str] = {
    "en": "en-us",
    "de": "de",
    "fr": "fr",
    "es": "es",
    "hi": "hi",
    "zh": "cmn-latn-pinyin",
}

SENTENCES: dict[str, list[str]] = {
    "en": [
        "Please remind me to call the dentist tomorrow morning.",
        "I will be about ten minutes late to the meeting.",
        "Can you send me the slides from last week's presentation?",
        "The weather is lovely today, so let's have lunch outside.",
        "Thank you for your help with the project report.",
        "Don't forget to buy milk, bread and a few apples on the way home.",
        "Our flight leaves early on Friday, so we should pack tonight.",
        "Let me know when you are free to talk about the new budget.",
    ],
    "de": [
        "Bitte erinnere mich morgen früh an den Termin beim Zahnarzt.",
        "Ich komme heute etwa zehn Minuten später ins Büro.",
        "Kannst du mir die Unterlagen von der letzten Besprechung schicken?",
        "Das Wetter ist heute sehr schön, lass uns draußen essen.",
        "Vielen Dank für deine Hilfe bei dem Bericht.",
        "Vergiss nicht, auf dem Heimweg Milch und Brot zu kaufen.",
        "Unser Zug fährt am Freitag sehr früh ab.",
        "Sag mir bitte Bescheid, wann du Zeit für ein kurzes Gespräch hast.",
    ],
    "fr": [
        "Rappelle-moi d'appeler le médecin demain matin, s'il te plaît.",
        "Je vais arriver avec dix minutes de retard à la réunion.",
        "Peux-tu m'envoyer les documents de la semaine dernière ?",
        "Il fait très beau aujourd'hui, allons déjeuner dehors.",
        "Merci beaucoup pour ton aide avec le rapport.",
        "N'oublie pas d'acheter du pain et du lait en rentrant.",
        "Notre train part très tôt vendredi matin.",
        "Dis-moi quand tu as le temps de parler du nouveau projet.",
    ],
    "es": [
        "Por favor, recuérdame llamar al médico mañana por la mañana.",
        "Voy a llegar unos diez minutos tarde a la reunión.",
        "¿Puedes enviarme los documentos de la semana pasada?",
        "Hoy hace muy buen tiempo, vamos a comer afuera.",
        "Muchas gracias por tu ayuda con el informe.",
        "No olvides comprar pan y leche de camino a casa.",
        "Nuestro vuelo sale muy temprano el viernes.",
        "Avísame cuando tengas tiempo para hablar del nuevo proyecto.",
    ],
    "hi": [
        "कृपया मुझे कल सुबह डॉक्टर को फ़ोन करने की याद दिलाना।",
        "मैं बैठक में दस मिनट देर से पहुँचूँगा।",
        "क्या आप मुझे पिछले हफ़्ते की रिपोर्ट भेज सकते हैं?",
        "आज मौसम बहुत अच्छा है, चलो बाहर खाना खाते हैं।",
        "रिपोर्ट में मदद करने के लिए आपका बहुत धन्यवाद।",
        "घर आते समय दूध और ब्रेड खरीदना मत भूलना।",
        "हमारी ट्रेन शुक्रवार को सुबह जल्दी निकलती है।",
        "जब आपके पास समय हो तो मुझे बताइए, हम नए काम के बारे में बात करेंगे।",
    ],
    "zh": [
        "请提醒我明天早上给医生打电话。",
        "我开会可能会晚到十分钟。",
        "你能把上周的报告发给我吗？",
        "今天天气很好，我们去外面吃午饭吧。",
        "非常感谢你帮我写这份报告。",
        "回家的路上别忘了买牛奶和面包。",
        "我们的火车星期五一大早就出发。",
        "你有空的时候告诉我，我们谈谈新的计划。",
    ],
}

# One English paragraph, spoken sentence by sentence with pauses, for audio longer than Whisper's
# thirty-second window (long-form transcription, chunking).
LONG_EN: list[str] = [
    "Good morning everyone, and thank you for joining the weekly planning call.",
    "First, the new website went live on Monday, and so far the feedback from customers has been very positive.",
    "Second, the support team would like everyone to write shorter answers and to link to the help pages more often.",
    "Third, we still need two volunteers to organize the summer party, so please send me a message if you are interested.",
    "Finally, remember that the office will be closed next Thursday for maintenance work on the heating system.",
    "That is everything for today, have a great week and see you all next Monday.",
]
LONG_PAUSE_SECONDS = 0.6
