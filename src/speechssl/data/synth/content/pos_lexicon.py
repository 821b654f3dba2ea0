"""Universal POS tags of the template words and slot glue words, per language.

Conventions (kept identical across languages so a syntactic probe transfers):
possessive determiners (my, mon, mein, mi, ...) are DET; modal verbs of ability
(can, peux, kannst, ...) and copulas/future auxiliaries are AUX; verbs of wanting
are VERB; fused preposition+article forms (au, zum, nel, na, ...) are ADP;
verb+clitic forms (despiértame, svegliami) are VERB; separable verb particles
(German an/aus/ein, Dutch aan/uit/op, English on/off/up) are ADP; politeness
words (please, bitte, prosím) are INTJ. Words whose tag depends on the context
("to" as ADP or PART) get the common tag here and are tagged inline elsewhere.
"""

from __future__ import annotations

from speechssl.data.synth.content.grammar import parse_lexicon

LEXICON: dict[str, dict[str, str]] = {
    "en": parse_lexicon("""
        DET: a an the some this my
        ADP: to in on at for by up off like
        PRON: i me you it what something
        AUX: am is can will would do
        VERB: set wake start need call phone text send write turn switch order book get give have
        VERB: play put listen hear want rain reserve buy
        NOUN: alarm timer weather forecast music message light lights taxi meeting calendar ticket train table
        ADJ: free
        ADV: today tomorrow tonight
        INTJ: please
    """),
    "fr": parse_lexicon("""
        DET: un une le la les l' du des mon quelle quelles quelque ce cet
        ADP: à au dans pour sur de d'
        PRON: je j' tu il me te
        SCONJ: s'
        AUX: est sont suis va peux
        VERB: programme réveiller mets lance veux voudrais appelle appeler téléphone envoie écris
        VERB: allume allumer éteins éteindre commande commander réserve ai faut joue écouter regarde achète
        VERB: pleuvoir plaît
        NOUN: alarme réveil minuteur météo prévisions musique chose message texto lumière lumières
        NOUN: taxi besoin réunion agenda billet train table
        ADJ: libre
        ADV: aujourd'hui demain
    """),
    "de": parse_lexicon("""
        DET: der die das dem den ein eine einen meinem
        ADP: in im ins am zum zur auf an aus nach für von um
        PRON: ich du es mich mir was etwas
        AUX: wird ist bin kannst möchte
        VERB: stell weck brauche starte regnet spiel hören mach ruf anrufen schick schreib sende schalte
        VERB: bestell bestellen habe steht kauf buch reservier
        NOUN: wecker timer wetter wettervorhersage musik nachricht licht taxi termin kalender
        NOUN: zugticket fahrkarte zugfahrt tisch
        ADJ: frei
        ADV: wie heute morgen früh
        INTJ: bitte
    """),
    "es": parse_lexicon("""
        DET: el la las los un una unos unas mi alguna esta este
        ADP: a al de del en por para
        PRON: algo qué poco
        AUX: va estoy puedes
        VERB: pon despiértame quiero activa necesito hará llover dime reproduce escuchar llama llamar
        VERB: envía manda escribe enciende encender apaga apagar pide pedir reserva tengo compra
        NOUN: alarma temporizador tiempo pronóstico música favor mensaje luz luces taxi reunión agenda
        NOUN: billete tren mesa
        ADJ: libre
        ADV: hoy mañana
    """),
    "it": parse_lexicon("""
        DET: il lo la l' le un un' una mia che questo dei della delle
        ADP: a ad di da del in nel nello nella sul sulle per all' alle
        PRON: mi c' cosa qualcosa
        AUX: puoi
        VERB: imposta svegliami metti avvia serve farà pioverà dimmi voglio ascoltare suona vorrei
        VERB: chiama telefonare manda invia scrivi accendi accendere spegni spegnere ordina ordinare
        VERB: chiamami prenota ho è compra chiamare
        NOUN: sveglia timer tempo previsioni musica favore messaggio luce luci taxi riunione impegni
        NOUN: agenda biglietto treno tavolo
        ADV: po' oggi domani stasera stamattina
    """),
    "nl": parse_lexicon("""
        DET: de het een mijn dit
        ADP: in op naar aan uit voor van om
        PRON: ik me je wat iets mij
        AUX: wordt is ben gaat kun
        VERB: zet maak wil start regenen speel luisteren horen bel bellen stuur doe aandoen uitdoen
        VERB: bestel bestellen regel heb staat koop boek reserveer
        NOUN: wekker timer weer muziek bericht berichtje licht taxi afspraak agenda treinkaartje kaartje
        NOUN: trein tafel
        ADJ: wakker nodig vrij
        ADV: even hoe er vandaag morgen vanavond vanochtend vanmiddag morgenochtend morgenmiddag morgenavond
        INTJ: alsjeblieft
    """),
    "pt": parse_lexicon("""
        DET: o a um uma alguma esta este
        ADP: de do da em na no nas para ao à às por
        PRON: algo que qual
        AUX: vai estar estou é podes
        VERB: define quero põe inicia chover toca ouvir liga ligar telefona manda envia escreve acende
        VERB: acender desliga apaga apagar pede pedir encomendar chama preciso tenho compra reserva
        NOUN: favor alarme despertador temporizador tempo previsão música mensagem luz táxi reunião agenda
        NOUN: bilhete comboio mesa
        ADJ: livre
        ADV: como hoje amanhã
    """),
    "cs": parse_lexicon("""
        DET: jaké nějakou
        ADP: v ve do na o od pro
        PRON: mě mi co něco si
        AUX: bude můžeš
        VERB: nastav vzbuď potřebuju spusť pršet řekni pusť zahraj chci poslouchat slyšet zavolej zavolat
        VERB: pošli napiš rozsviť rozsvítit zapni zhasni zhasnout vypni objednej objednat mám kup zarezervuj
        NOUN: budík časovač minutku počasí předpověď zprávu esemesku světlo taxi schůzku volno kalendáři
        NOUN: jízdenku lístek vlak stůl
        ADV: dnes zítra
        INTJ: prosím
    """),
}
